"""The options of every command that calls the Scheduler gRPC API, as one ``Api`` argument.

``--target`` (else ``ListenOn`` of ``-f``'s config), ``--json`` and
``--timeout`` reach the command as ``api: Api``; the target is resolved when
the command asks for it, so a command checks its own arguments first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from me2_scheduler.cli.common import FILE_PATH, json_option, load_or_exit, with_options

_OPTIONS = (
    click.option(
        "--target",
        "given_target",
        metavar="HOST:PORT",
        help="The scheduler's gRPC address; default ListenOn of -f's config.",
    ),
    click.option(
        "-f", "config_path", type=FILE_PATH, help="Service YAML config, for the default --target."
    ),
    json_option,
    click.option(
        "--timeout",
        "timeout_s",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the answer.",
    ),
)


@dataclass(frozen=True)
class Api:
    """Where the Scheduler API is and how its answer is shown."""

    given_target: str | None
    config_path: str | None
    as_json: bool
    timeout_s: float

    def target(self) -> str:
        """``--target``, else the ``ListenOn`` of ``-f``'s config; a usage error without either."""
        from me2_scheduler.ops.avatar import target_from_listen_on

        if self.given_target:
            return self.given_target
        if self.config_path:
            return target_from_listen_on(load_or_exit(self.config_path).listen_on)
        raise click.UsageError("--target HOST:PORT is required unless -f FILE is given")


def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the API options to ``command``, which receives them as ``api: Api``."""

    @functools.wraps(command)
    def with_api(
        *args: Any,
        given_target: str | None,
        config_path: str | None,
        as_json: bool,
        timeout_s: float,
        **kwargs: Any,
    ) -> Any:
        return command(*args, api=Api(given_target, config_path, as_json, timeout_s), **kwargs)

    return with_options(*_OPTIONS)(with_api)
