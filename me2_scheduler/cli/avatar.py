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

from me2_scheduler.cli.api import Api, api_options
from me2_scheduler.cli.common import fail, print_answer, with_options
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


_LIMIT = click.option(
    "--limit",
    type=click.IntRange(0, 100),
    default=0,
    help="Entries per page (0: the server's default).",
)
_CURSOR = click.option(
    "--cursor",
    type=click.IntRange(min=0),
    default=0,
    help="next_cursor of the previous page (0: newest first).",
)


def _avatar_command(action: str) -> click.Command:
    """``avatar <action> ID``; ``history`` also takes ``--limit`` and ``--cursor``."""

    def command(avatar_id: int, api: Api, limit: int = 0, cursor: int = 0) -> None:
        from me2_scheduler.ops.avatar import call, render

        target = api.target()
        try:
            response = call(
                target, action, avatar_id, timeout_s=api.timeout_s, limit=limit, cursor=cursor
            )
        except SchedulerError as exc:
            fail(exc)
        print_answer(response, api.as_json, render)

    decorators: list[Callable[[Any], Any]] = [click.argument("avatar_id", type=int), api_options]
    if action == "history":
        decorators += [_LIMIT, _CURSOR]
    return click.command(action, help=_AVATAR_HELP[action])(with_options(*decorators)(command))


for _action in _AVATAR_HELP:
    avatar.add_command(_avatar_command(_action))
