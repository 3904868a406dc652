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

ACTIVE, PAUSED, DISABLED = "active", "paused", "disabled"
STATUSES = (ACTIVE, PAUSED, DISABLED)
PAUSED_BY_USER, PAUSED_BY_FAILURES = "user", "failures"

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
    new_status: str | None = None
    pause_reason: str | None = None
    reschedule: bool = False
    dispatch: bool = False

    @property
    def changes_row(self) -> bool:
        return self.create or self.new_status is not None or self.reschedule


_UNCHANGED = Decision(OK)
_REACTIVATE = Decision(OK, new_status=ACTIVE, reschedule=True)

# DESIGN §4: call × state → decision. ``None`` stands for "no schedule row".
STATE_TABLE: dict[tuple[Call, str | None], Decision] = {
    (Call.ENABLE, None): Decision(OK, create=True, new_status=ACTIVE, reschedule=True),
    (Call.ENABLE, ACTIVE): _UNCHANGED,
    (Call.ENABLE, PAUSED): _REACTIVATE,
    (Call.ENABLE, DISABLED): _REACTIVATE,
    (Call.PAUSE, ACTIVE): Decision(OK, new_status=PAUSED, pause_reason=PAUSED_BY_USER),
    (Call.PAUSE, PAUSED): _UNCHANGED,
    (Call.PAUSE, DISABLED): Decision(CONFLICT, "a disabled schedule cannot be paused"),
    (Call.RESUME, ACTIVE): _UNCHANGED,
    (Call.RESUME, PAUSED): _REACTIVATE,
    (Call.RESUME, DISABLED): Decision(
        CONFLICT, "a disabled schedule cannot be resumed; use EnableAvatarSchedule"
    ),
    (Call.DISABLE, ACTIVE): Decision(OK, new_status=DISABLED),
    (Call.DISABLE, PAUSED): Decision(OK, new_status=DISABLED),
    (Call.DISABLE, DISABLED): _UNCHANGED,
    (Call.TRIGGER, ACTIVE): Decision(OK, dispatch=True),
    (Call.TRIGGER, PAUSED): Decision(OK, dispatch=True),
    (Call.TRIGGER, DISABLED): Decision(CONFLICT, "a disabled schedule cannot be triggered"),
    (Call.GET, ACTIVE): _UNCHANGED,
    (Call.GET, PAUSED): _UNCHANGED,
    (Call.GET, DISABLED): _UNCHANGED,
}


def decide(call: Call, status: str | None) -> Decision:
    """The decision for ``call`` on a schedule in ``status`` (None: no schedule).

    Raises ValueError for a status outside active/paused/disabled.
    """
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown schedule status {status!r}")
    decision = STATE_TABLE.get((call, status))
    if decision is None:  # every call but Enable on a missing schedule
        return Decision(NOT_FOUND, "no schedule for this avatar; enable it first")
    return decision


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
    return status in (ACTIVE, PAUSED)


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
