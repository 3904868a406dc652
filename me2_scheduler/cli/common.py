"""Shared by every command: exit codes, the ``-f`` and ``--json`` options, one-line failures.

Exit codes are a contract: 0 ok, 1 operational failure (a server unreachable,
an API result code other than 0), 2 usage or config error. A config error
prints one line ``config error: <key.path>: <problem>``, any other failure
one line ``error: ...``; never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import click

from me2_scheduler.errors import ConfigError, SchedulerError

if TYPE_CHECKING:
    from me2_scheduler.config import Config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# A file the command reads or writes (not a directory).
FILE_PATH = click.Path(dir_okay=False)

config_option = click.option(
    "-f", "config_path", required=True, type=FILE_PATH, help="Service YAML config (go-zero shape)."
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of text."
)


def count_option(*decls: str, between: tuple[int, int], default: int, help: str) -> Any:
    """An integer option bounded by ``between`` (both ends included) that shows its default."""
    return click.option(
        *decls, type=click.IntRange(*between), default=default, show_default=True, help=help
    )


def with_options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Apply click decorators given as a list, as if written one above the other."""

    def apply(command: Any) -> Any:
        for decorate in reversed(decorators):
            command = decorate(command)
        return command

    return apply


def load_or_exit(path: str) -> Config:
    """Load the config or exit 2 with the one-line ``config error:`` message."""
    from me2_scheduler.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def fail(exc: BaseException, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``error: <exc>`` on one line (its whitespace folded) and exit with ``code``."""
    click.echo(f"error: {' '.join(str(exc).split())}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Config errors exit 2 with ``config error:``, operational ones 1 with ``error:``."""
    try:
        yield
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except SchedulerError as exc:
        fail(exc)


def echo_json(document: Any) -> None:
    """One JSON document on stdout, UTF-8 kept readable."""
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


def print_answer(response: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print a Scheduler API answer (``--json``: the whole response in proto field names);
    exit 1 with ``error: code <code>: <message>`` unless its code is 0."""
    from me2_scheduler.ops.avatar import to_dict

    if as_json:
        echo_json(to_dict(response))
    if response.code != 0:
        click.echo(f"error: code {response.code}: {response.message}", err=True)
        sys.exit(EXIT_FAILURE)
    if not as_json:
        click.echo(render(response))
