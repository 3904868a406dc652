"""Scheduling policy as pure functions: next time, retry, auto-pause, the state table.

Nothing here does I/O or reads a clock: ``now`` and the random source are
arguments, so the rules are unit- and property-tested alone (DESIGN §3.3).
Times are whole seconds, the resolution of the seed's DATETIME columns, so a
due time in Redis always equals the row's ``next_schedule_time``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from me2_scheduler.states import PauseReason, Status, Trigger

OK, INVALID, NOT_FOUND, CONFLICT, INTERNAL, UNAVAILABLE = 0, 400, 404, 409, 500, 503


class Call(str, Enum):
    """The RPCs whose answer depends on the avatar's state."""

    ENABLE = "EnableAvatarSchedule"
    PAUSE = "PauseAvatarSchedule"
    RESUME = "ResumeAvatarSchedule"
    DISABLE = "DisableAvatarSchedule"
    TRIGGER = "TriggerSchedule"
    GET = "GetAvatarScheduleStatus"


@dataclass(frozen=True)
class Decision:
    """What a call does to a schedule in a given state.

    ``new_status`` None means the status is kept; ``reschedule`` means a new
    next time is drawn and ``failed_count`` reset to 0 (enable and resume);
    ``dispatch`` means Action is called now (TriggerSchedule).
    """

    code: int
    message: str = ""
    create: bool = False
    new_status: Status | None = None
    pause_reason: PauseReason | None = None
    reschedule: bool = False
    dispatch: bool = False

    @property
    def changes_row(self) -> bool:
        return self.create or self.new_status is not None or self.reschedule


_UNCHANGED = Decision(OK)
_REACTIVATE = Decision(OK, new_status=Status.ACTIVE, reschedule=True)
_DISPATCH = Decision(OK, dispatch=True)

# DESIGN §4: call × state → decision. ``None`` stands for "no schedule row".
STATE_TABLE: dict[tuple[Call, Status | None], Decision] = {
    (Call.ENABLE, None): Decision(OK, create=True, new_status=Status.ACTIVE, reschedule=True),
    (Call.ENABLE, Status.ACTIVE): _UNCHANGED,
    (Call.ENABLE, Status.PAUSED): _REACTIVATE,
    (Call.ENABLE, Status.DISABLED): _REACTIVATE,
    (Call.PAUSE, Status.ACTIVE): Decision(
        OK, new_status=Status.PAUSED, pause_reason=PauseReason.USER
    ),
    (Call.PAUSE, Status.PAUSED): _UNCHANGED,
    (Call.PAUSE, Status.DISABLED): Decision(CONFLICT, "a disabled schedule cannot be paused"),
    (Call.RESUME, Status.ACTIVE): _UNCHANGED,
    (Call.RESUME, Status.PAUSED): _REACTIVATE,
    (Call.RESUME, Status.DISABLED): Decision(
        CONFLICT, "a disabled schedule cannot be resumed; use EnableAvatarSchedule"
    ),
    (Call.DISABLE, Status.ACTIVE): Decision(OK, new_status=Status.DISABLED),
    (Call.DISABLE, Status.PAUSED): Decision(OK, new_status=Status.DISABLED),
    (Call.DISABLE, Status.DISABLED): _UNCHANGED,
    (Call.TRIGGER, Status.ACTIVE): _DISPATCH,
    (Call.TRIGGER, Status.PAUSED): _DISPATCH,
    (Call.TRIGGER, Status.DISABLED): Decision(CONFLICT, "a disabled schedule cannot be triggered"),
    (Call.GET, Status.ACTIVE): _UNCHANGED,
    (Call.GET, Status.PAUSED): _UNCHANGED,
    (Call.GET, Status.DISABLED): _UNCHANGED,
}


def decide(call: Call, status: str | None) -> Decision:
    """The decision for ``call`` on a schedule in ``status`` (None: no schedule).

    Raises ValueError for a status outside active/paused/disabled.
    """
    decision = STATE_TABLE.get((call, None if status is None else known_status(status)))
    if decision is None:  # every call but Enable on a missing schedule
        return Decision(NOT_FOUND, "no schedule for this avatar; enable it first")
    return decision


def known_status(status: str) -> Status:
    """``status`` as a ``Status``; raise ValueError for one outside active/paused/disabled."""
    try:
        return Status(status)
    except ValueError:
        raise ValueError(f"unknown schedule status {status!r}") from None


def whole_second(moment: datetime) -> datetime:
    """``moment`` without its fraction of a second (DATETIME's resolution)."""
    return moment.replace(microsecond=0)


def interval_bounds_s(min_hours: float, max_hours: float) -> tuple[int, int]:
    """The whole-second range [lo, hi] an interval of [min, max] hours is drawn from."""
    lo = math.ceil(min_hours * 3600)
    hi = max(lo, math.floor(max_hours * 3600))
    return lo, hi


def next_due(now: datetime, min_hours: float, max_hours: float, rng: random.Random) -> datetime:
    """The next planned time after a success: uniform in [min, max] hours after ``now``.

    The result is whole seconds, measured from ``now`` truncated to the second.
    """
    lo, hi = interval_bounds_s(min_hours, max_hours)
    return whole_second(now) + timedelta(seconds=rng.randint(lo, hi))


def retry_due(now: datetime, retry_delay_seconds: float) -> datetime:
    """The next planned time after a failure: ``RetryDelaySeconds`` later (whole seconds)."""
    return whole_second(now) + timedelta(seconds=math.ceil(retry_delay_seconds))


def success_moves_next(status: str) -> bool:
    """Whether a successful dispatch of a schedule in ``status`` draws its next time.

    Active: its next slot. Paused (only a TriggerSchedule dispatches it): as
    well, since the seed's Trigger "updates the statistics and the next
    schedule time"; the status is kept, so the time is only shown until a
    resume, which draws its own, and the avatar stays out of the index.
    Disabled: never dispatched, never moved.
    """
    return status in (Status.ACTIVE, Status.PAUSED)


@dataclass(frozen=True)
class FailureOutcome:
    """The consecutive-failure count after one more failure, and whether to auto-pause."""

    failed_count: int
    pause: bool


def after_failure(failed_count: int, max_consecutive_failures: int) -> FailureOutcome:
    """Count one more consecutive failure; pause exactly when the count reaches the limit."""
    count = max(failed_count, 0) + 1
    return FailureOutcome(count, count >= max_consecutive_failures)


def idempotency_key(avatar_id: int, planned_at: datetime) -> str:
    """The key Action dedupes a repeated slot by: ``"<avatar_id>:<planned epoch ms>"``."""
    return f"{avatar_id}:{round(planned_at.timestamp() * 1000)}"


# -- what a dispatch writes --------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Attempt:
    """What every dispatch attempt records: whose, which slot, when, under which key.

    ``expected_version`` is the row's version when the dispatcher read it.
    """

    avatar_id: int
    expected_version: int
    trigger: Trigger
    planned_at: datetime | None
    started_at: datetime
    finished_at: datetime
    idempotency_key: str | None


@dataclass(frozen=True, kw_only=True)
class Success(_Attempt):
    """Action acted for the avatar; ``next_time`` is the next slot drawn for it."""

    action_type: str
    action_id: int
    next_time: datetime


@dataclass(frozen=True, kw_only=True)
class Failure(_Attempt):
    """Action failed; ``retry_time`` is when to try again, unless this pauses the avatar.

    ``next_time`` is the next slot a success would have drawn: where the row
    moves on to when this slot turns out recorded as a success already
    (``past_recorded_slot``); None falls back on ``retry_time``.
    ``unavailable``: Action was unreachable or too slow (not stored; a
    TriggerSchedule answers 503 for it). ``overloaded``: Action said it has no
    room (RESOURCE_EXHAUSTED or UNAVAILABLE): the worker holds fewer calls in
    flight for a while.
    """

    error: str
    retry_time: datetime
    max_consecutive_failures: int
    next_time: datetime | None = None
    unavailable: bool = False
    overloaded: bool = False


Attempt = Success | Failure


class SlotRow(Protocol):
    """What ``past_recorded_slot`` reads of a schedule row."""

    @property
    def status(self) -> str: ...
    @property
    def next_schedule_time(self) -> datetime: ...


def waits_for_slot(row: SlotRow, planned_at: datetime | None) -> bool:
    """Whether ``row`` still waits for the slot planned at ``planned_at``: active, and its
    next time not after the slot's (the pick-up check)."""
    return (
        planned_at is not None
        and row.status == Status.ACTIVE
        and row.next_schedule_time <= planned_at
    )


def past_recorded_slot(
    row: SlotRow, planned_at: datetime | None, next_time: datetime
) -> dict[str, Any]:
    """What meeting again a slot already recorded as a success writes to ``row``.

    While the row still waits for that slot (``waits_for_slot``), it moves on
    to ``next_time``, and never to a time at or before the slot: else the slot
    would be claimed, found recorded, and put back at the same past time, for
    ever. A row that moved on already (or is not active) is left alone.
    """
    if planned_at is None or not waits_for_slot(row, planned_at):
        return {}
    return {"next_schedule_time": max(next_time, whole_second(planned_at) + timedelta(seconds=1))}


def recorded_next_time(attempt: Attempt) -> datetime:
    """Where a repeat ``attempt`` of a slot recorded as a success moves its row: the next
    time a success would have drawn (a failure that drew none: its retry time)."""
    if isinstance(attempt, Success):
        return attempt.next_time
    return attempt.next_time or attempt.retry_time


class RowState(Protocol):
    """What ``after_dispatch`` reads of a schedule row."""

    @property
    def status(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def schedule_count(self) -> int: ...
    @property
    def failed_count(self) -> int: ...


@dataclass(frozen=True)
class AfterDispatch:
    """What recording one attempt writes to its row.

    ``changes`` maps the row's columns to their new values (the store adds
    its own ``version`` and ``updated_at``). ``applied``: the schedule part
    was written, the row having stayed as the dispatcher read it.
    ``auto_paused``: this failure paused the schedule.
    """

    changes: dict[str, Any]
    applied: bool
    auto_paused: bool = False


def after_dispatch(row: RowState, attempt: Attempt) -> AfterDispatch:
    """What ``attempt`` writes to ``row``, read (locked) just before recording it.

    Always (the dispatch happened): the counters, times and error columns;
    ``schedule_count`` counts successes only. Only while the row is at the
    version the dispatcher read (nobody moved it since): after a success, the
    next due time, of an active row and of a paused one a TriggerSchedule
    dispatched (``success_moves_next``); after a failure of an active row, the
    retry time or the pause after too many failures in a row.
    """
    unmoved = row.version == attempt.expected_version
    if isinstance(attempt, Success):
        return _after_success(row, attempt, unmoved and success_moves_next(row.status))
    # A paused row keeps its time: a retry would be shown, never planned.
    return _after_failure(row, attempt, unmoved and row.status == Status.ACTIVE)


def _after_success(row: RowState, success: Success, applied: bool) -> AfterDispatch:
    changes: dict[str, Any] = {
        "schedule_count": row.schedule_count + 1,
        "last_schedule_time": success.started_at,
        "last_action_type": success.action_type,
        "failed_count": 0,
        "last_error": None,
    }
    if applied:
        changes["next_schedule_time"] = success.next_time
    return AfterDispatch(changes, applied)


def _after_failure(row: RowState, failure: Failure, applied: bool) -> AfterDispatch:
    counted = after_failure(row.failed_count, failure.max_consecutive_failures)
    changes: dict[str, Any] = {
        "failed_count": counted.failed_count,
        "last_failed_time": failure.finished_at,
        "last_error": failure.error,
    }
    paused = applied and counted.pause
    if paused:
        changes["status"] = Status.PAUSED
        changes["pause_reason"] = PauseReason.FAILURES
    elif applied:
        changes["next_schedule_time"] = failure.retry_time
    return AfterDispatch(changes, applied, paused)
