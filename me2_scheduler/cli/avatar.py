"""``me2-scheduler avatar <action> ID``: one avatar through the Scheduler gRPC API.

Prints the response's ``code``, ``message`` and schedule info (or the history
entries as a table); ``--json`` prints the whole response in proto field
names. A result code other than 0 prints ``error: code <code>: <message>`` on
stderr and exits 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from me2_scheduler.cli.common import fail, json_option, load_or_exit, print_answer
from me2_scheduler.errors import SchedulerError

_AVATAR_HELP = {
    "enable": "Enable an avatar's schedule (create it when absent).",
    "pause": "Pause an active avatar's schedule.",
    "resume": "Resume a paused avatar (also one auto-paused after failures).",
    "disable": "Disable an avatar's schedule until it is enabled again.",
    "trigger": "Dispatch one action for the avatar now.",
    "get": "Show an avatar's schedule.",
    "history": "Show an avatar's dispatches, newest first (one page).",
}


@click.group("avatar")
def avatar() -> None:
    """Call the Scheduler gRPC API for one avatar and print the answer."""


# Where the API is and how to show its answer: every command that calls it takes these.
API_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--target",
        metavar="HOST:PORT",
        help="The scheduler's gRPC address; default ListenOn of -f's config.",
    ),
    click.option(
        "-f",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Service YAML config, for the default --target.",
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
]


def _avatar_command(action: str) -> click.Command:
    """``avatar <action> ID``; ``history`` also takes ``--limit`` and ``--cursor``."""

    def command(
        avatar_id: int,
        target: str | None,
        config_path: str | None,
        as_json: bool,
        timeout_s: float,
        limit: int = 0,
        cursor: int = 0,
    ) -> None:
        resolved = resolve_target(target, config_path)
        _call_avatar(
            resolved, action, avatar_id, as_json, timeout_s=timeout_s, limit=limit, cursor=cursor
        )

    decorators = [click.argument("avatar_id", type=int), *API_OPTIONS]
    if action == "history":
        decorators += [
            click.option(
                "--limit",
                type=click.IntRange(0, 100),
                default=0,
                help="Entries per page (0: the server's default).",
            ),
            click.option(
                "--cursor",
                type=click.IntRange(min=0),
                default=0,
                help="next_cursor of the previous page (0: newest first).",
            ),
        ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return click.command(action, help=_AVATAR_HELP[action])(command)


def resolve_target(target: str | None, config_path: str | None) -> str:
    """``--target``, else the ``ListenOn`` of ``-f``'s config; a usage error without either."""
    from me2_scheduler.ops.avatar import target_from_listen_on

    if target:
        return target
    if config_path:
        return target_from_listen_on(load_or_exit(config_path).listen_on)
    raise click.UsageError("--target HOST:PORT is required unless -f FILE is given")


def _call_avatar(target: str, action: str, avatar_id: int, as_json: bool, **kwargs: Any) -> None:
    from me2_scheduler.ops.avatar import call, render

    try:
        response = call(target, action, avatar_id, **kwargs)
    except SchedulerError as exc:
        fail(exc)
    print_answer(response, as_json, render)


for _action in _AVATAR_HELP:
    avatar.add_command(_avatar_command(_action))
