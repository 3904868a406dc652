"""Scheduling policies through the gRPC API: ``avatar policy get|set ID``, ``policy preview``
and ``policy set-many``.

A policy is given as a JSON file (``--file``, what ``avatar policy get``
prints), as options (``--time-zone``, ``--window 08:00-23:00@mon-fri``,
``--min-hours``, ``--max-hours``, ``--day-rate sat-sun=2``, ``--quiet-date``),
or as ``--default`` (the service default). It is checked here before it is
sent: a policy or id list that cannot be read exits 2 with one ``error:``
line naming the field; an API answer other than 0 exits 1 with
``error: code <code>: <message>``, as every ``avatar`` command.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import click

from me2_scheduler.cli.api import Api, api_options
from me2_scheduler.cli.common import (
    EXIT_USAGE,
    FILE_PATH,
    count_option,
    echo_json,
    fail,
    print_answer,
    with_options,
)
from me2_scheduler.errors import SchedulerError

if TYPE_CHECKING:
    from me2_scheduler.ops.policy import PolicyOptions

IDS_FILE_HELP = "A file of avatar ids (commas, spaces or lines; # comments)."

POLICY_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--file",
        "policy_file",
        type=FILE_PATH,
        help="The policy as JSON (what `avatar policy get` prints).",
    ),
    click.option(
        "--default",
        "use_default",
        is_flag=True,
        help="The service default: always active, ActionSchedule's interval.",
    ),
    click.option(
        "--time-zone",
        default=None,
        metavar="ZONE",
        help="IANA zone of the windows (default: the service Timezone).",
    ),
    click.option(
        "--window",
        "windows",
        multiple=True,
        metavar="START-END[@DAYS]",
        help="An active window, e.g. 08:00-23:00@mon-fri or 22:00-02:00 (repeatable).",
    ),
    click.option(
        "--min-hours", type=float, default=None, help="Shortest interval, hours of active time."
    ),
    click.option(
        "--max-hours", type=float, default=None, help="Longest interval, hours of active time."
    ),
    click.option(
        "--day-rate",
        "day_rates",
        multiple=True,
        metavar="DAYS=RATE",
        help="Rate of active time on those days, e.g. sat-sun=2 (repeatable).",
    ),
    click.option(
        "--quiet-date",
        "quiet_dates",
        multiple=True,
        metavar="YYYY-MM-DD",
        help="A local date with no active time (repeatable).",
    ),
]


@dataclass(frozen=True)
class GivenPolicy:
    """The policy as the options gave it: a file, ``--default``, or inline options."""

    policy_file: str | None
    use_default: bool
    inline: PolicyOptions

    def message(self) -> Any:
        """The ``SchedulePolicy`` message; exit 2 when the options give none, more than one,
        or one that cannot be read."""
        from me2_scheduler.ops.policy import PolicyInputError, checked, read_document

        if sum((self.policy_file is not None, self.use_default, self.inline.given)) != 1:
            raise click.UsageError(
                "give the policy once: --file FILE, --default, or options such as --window"
            )
        try:
            if self.policy_file is not None:
                return checked(read_document(self.policy_file), self.policy_file)
            return checked({} if self.use_default else self.inline.document(), "the options")
        except PolicyInputError as exc:
            fail(exc, EXIT_USAGE)


def policy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the policy options to ``command``, which receives them as ``policy: GivenPolicy``."""

    @functools.wraps(command)
    def with_policy(*args: Any, policy_file: str | None, use_default: bool, **kwargs: Any) -> Any:
        from me2_scheduler.ops.policy import PolicyOptions

        inline = PolicyOptions(**{f.name: kwargs.pop(f.name) for f in fields(PolicyOptions)})
        return command(*args, policy=GivenPolicy(policy_file, use_default, inline), **kwargs)

    return with_options(*POLICY_OPTIONS)(with_policy)


def _answer(response: Any, as_json: bool) -> None:
    """Print a policy answer; exit 1 with ``error: code <code>: <message>`` unless code 0."""
    from me2_scheduler.ops.policy import render

    print_answer(response, as_json, render)


# -- avatar policy get|set ID -----------------------------------------------------------


@click.group("policy")
def avatar_policy() -> None:
    """Read or set one avatar's scheduling policy."""


_ID = click.argument("avatar_id", type=click.IntRange(min=1))


@avatar_policy.command("get")
@with_options(_ID, api_options)
def get_command(avatar_id: int, api: Api) -> None:
    """Show an avatar's policy and what applies where it leaves a blank."""
    from me2_scheduler.ops.policy import get_policy

    target = api.target()
    try:
        response = get_policy(target, avatar_id, timeout_s=api.timeout_s)
    except SchedulerError as exc:
        fail(exc)
    _answer(response, api.as_json)


@avatar_policy.command("set")
@with_options(_ID, api_options, policy_options)
def set_command(avatar_id: int, api: Api, policy: GivenPolicy) -> None:
    """Set an avatar's policy (a next time outside the new windows is re-drawn)."""
    from me2_scheduler.ops.policy import set_policy

    message = policy.message()
    target = api.target()
    try:
        response = set_policy(target, avatar_id, message, timeout_s=api.timeout_s)
    except SchedulerError as exc:
        fail(exc)
    _answer(response, api.as_json)


# -- policy preview | set-many ----------------------------------------------------------


@click.group("policy")
def policy() -> None:
    """Scheduling policies: preview an avatar's next draws, set one policy for many avatars."""


@policy.command("preview")
@click.option(
    "--avatar",
    "avatar_id",
    type=click.IntRange(min=1),
    required=True,
    help="The avatar whose policy to draw from.",
)
@count_option("--count", between=(1, 1000), default=20, help="How many draws.")
@click.option("--seed", type=int, default=None, help="Seed of the draws, to repeat a preview.")
@with_options(api_options)
def preview_command(avatar_id: int, count: int, seed: int | None, api: Api) -> None:
    """Print an avatar's next draws, in its policy's zone.

    Each is drawn as the dispatcher draws it after a success at the one
    before, starting now, with the avatar's policy as the server has it.
    """
    from me2_scheduler.clock import utc_now
    from me2_scheduler.ops.policy import get_policy, preview

    target = api.target()
    try:
        response = get_policy(target, avatar_id, timeout_s=api.timeout_s)
        if response.code != 0:
            _answer(response, api.as_json)
        shown = preview(response, avatar_id, utc_now(), count, random.Random(seed))
    except SchedulerError as exc:
        fail(exc)
    if api.as_json:
        echo_json(shown.as_dict())
    else:
        click.echo(shown.render())


@policy.command("set-many")
@click.option("--ids", default=None, metavar="ID,ID,...", help="Avatar ids, comma-separated.")
@click.option("--ids-file", type=FILE_PATH, help=IDS_FILE_HELP)
@with_options(api_options, policy_options)
def set_many_command(ids: str | None, ids_file: str | None, api: Api, policy: GivenPolicy) -> None:
    """Give one policy to many avatars.

    One call per 1000 ids, each one transaction; ids without a schedule
    are listed and skipped.
    """
    from me2_scheduler.ops.policy import BulkFailed, PolicyInputError, parse_ids, read_ids, set_many

    if (ids is None) == (ids_file is None):
        raise click.UsageError("give the avatars once: --ids 1,2,3 or --ids-file FILE")
    try:
        avatar_ids = parse_ids(ids, "--ids") if ids is not None else read_ids(str(ids_file))
    except PolicyInputError as exc:
        fail(exc, EXIT_USAGE)
    message = policy.message()
    target = api.target()
    try:
        done = set_many(target, avatar_ids, message, timeout_s=api.timeout_s)
    except BulkFailed as exc:
        if api.as_json:
            echo_json(exc.done.as_dict())
        fail(exc)
    except SchedulerError as exc:
        fail(exc)
    if api.as_json:
        echo_json(done.as_dict())
        return
    click.echo(
        f"updated {done.updated} of {done.asked} avatars in {done.calls} call(s);"
        f" {done.redrawn} next time(s) re-drawn"
    )
    if done.missing:
        shown = ",".join(map(str, done.missing[:50])) + (" ..." if len(done.missing) > 50 else "")
        click.echo(f"{len(done.missing)} id(s) without a schedule, skipped: {shown}")
