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

import random
from collections.abc import Callable
from typing import Any

import click

from me2_scheduler.cli.avatar import API_OPTIONS, resolve_target
from me2_scheduler.cli.common import EXIT_USAGE, echo_json, fail, print_answer
from me2_scheduler.errors import SchedulerError

POLICY_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--file",
        "policy_file",
        type=click.Path(dir_okay=False),
        default=None,
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


def with_options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Apply click option decorators given as a list, as if written one above the other."""

    def apply(command: Any) -> Any:
        for decorate in reversed(decorators):
            command = decorate(command)
        return command

    return apply


def _policy_given(policy_file: str | None, use_default: bool, **inline: Any) -> Any:
    """The ``SchedulePolicy`` message the options give; exit 2 when they give none, more
    than one, or one that cannot be read."""
    from me2_scheduler.ops.policy import PolicyInputError, PolicyOptions, checked, read_document

    options = PolicyOptions(**inline)
    if sum((policy_file is not None, use_default, options.given)) != 1:
        raise click.UsageError(
            "give the policy once: --file FILE, --default, or options such as --window"
        )
    try:
        if policy_file is not None:
            return checked(read_document(policy_file), policy_file)
        return checked({} if use_default else options.document(), "the options")
    except PolicyInputError as exc:
        fail(exc, EXIT_USAGE)


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
@with_options(_ID, *API_OPTIONS)
def get_command(
    avatar_id: int, target: str | None, config_path: str | None, as_json: bool, timeout_s: float
) -> None:
    """Show an avatar's policy and what applies where it leaves a blank."""
    from me2_scheduler.ops.policy import get_policy

    resolved = resolve_target(target, config_path)
    try:
        response = get_policy(resolved, avatar_id, timeout_s=timeout_s)
    except SchedulerError as exc:
        fail(exc)
    _answer(response, as_json)


@avatar_policy.command("set")
@with_options(_ID, *API_OPTIONS, *POLICY_OPTIONS)
def set_command(
    avatar_id: int,
    target: str | None,
    config_path: str | None,
    as_json: bool,
    timeout_s: float,
    policy_file: str | None,
    use_default: bool,
    **inline: Any,
) -> None:
    """Set an avatar's policy (a next time outside the new windows is re-drawn)."""
    from me2_scheduler.ops.policy import set_policy

    message = _policy_given(policy_file, use_default, **inline)
    resolved = resolve_target(target, config_path)
    try:
        response = set_policy(resolved, avatar_id, message, timeout_s=timeout_s)
    except SchedulerError as exc:
        fail(exc)
    _answer(response, as_json)


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
@click.option(
    "--count", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many draws."
)
@click.option("--seed", type=int, default=None, help="Seed of the draws, to repeat a preview.")
@with_options(*API_OPTIONS)
def preview_command(
    avatar_id: int,
    count: int,
    seed: int | None,
    target: str | None,
    config_path: str | None,
    as_json: bool,
    timeout_s: float,
) -> None:
    """Print an avatar's next draws, in its policy's zone.

    Each is drawn as the dispatcher draws it after a success at the one
    before, starting now, with the avatar's policy as the server has it.
    """
    from me2_scheduler.clock import utc_now
    from me2_scheduler.ops.policy import get_policy, preview

    resolved = resolve_target(target, config_path)
    try:
        response = get_policy(resolved, avatar_id, timeout_s=timeout_s)
        if response.code != 0:
            _answer(response, as_json)
        shown = preview(response, avatar_id, utc_now(), count, random.Random(seed))
    except SchedulerError as exc:
        fail(exc)
    if as_json:
        echo_json(shown.as_dict())
    else:
        click.echo(shown.render())


@policy.command("set-many")
@click.option("--ids", default=None, metavar="ID,ID,...", help="Avatar ids, comma-separated.")
@click.option(
    "--ids-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A file of avatar ids (commas, spaces or lines; # comments).",
)
@with_options(*API_OPTIONS, *POLICY_OPTIONS)
def set_many_command(
    ids: str | None,
    ids_file: str | None,
    target: str | None,
    config_path: str | None,
    as_json: bool,
    timeout_s: float,
    policy_file: str | None,
    use_default: bool,
    **inline: Any,
) -> None:
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
    message = _policy_given(policy_file, use_default, **inline)
    resolved = resolve_target(target, config_path)
    try:
        done = set_many(resolved, avatar_ids, message, timeout_s=timeout_s)
    except BulkFailed as exc:
        if as_json:
            echo_json(exc.done.as_dict())
        fail(exc)
    except SchedulerError as exc:
        fail(exc)
    if as_json:
        echo_json(done.as_dict())
        return
    click.echo(
        f"updated {done.updated} of {done.asked} avatars in {done.calls} call(s);"
        f" {done.redrawn} next time(s) re-drawn"
    )
    if done.missing:
        shown = ",".join(map(str, done.missing[:50])) + (" ..." if len(done.missing) > 50 else "")
        click.echo(f"{len(done.missing)} id(s) without a schedule, skipped: {shown}")
