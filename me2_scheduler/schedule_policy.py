"""Scheduling policies: when an avatar is active, and its next time drawn in active time.

A policy has daily windows in a time zone (none: always active), per-weekday
rates and quiet dates. The next time after a success is drawn as today's
uniform [min, max] hours, but the hours are *weighted active time*: seconds
outside the windows do not count and a second on a day of rate r counts r
times. So no dispatch falls outside a window, and the default policy gives
exactly ``policy.next_due``. How window edges meet DST: ``active_time``.

This module is the public face; the types and rules are in
``schedule_policy_model``, the JSON form in ``schedule_policy_json``. Pure:
no I/O, no clock; ``now`` and the random source are arguments.
"""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

from me2_scheduler import active_time, policy
from me2_scheduler.clock import epoch, from_epoch
from me2_scheduler.schedule_policy_json import parse_policy, policy_to_dict
from me2_scheduler.schedule_policy_model import (
    ALL_DAYS,
    DAY_NAMES,
    DEFAULT,
    PolicyError,
    PolicyNeverActive,
    SchedulePolicy,
    Window,
    calendar_of,
    policy_problems,
    time_text,
    zone_problem,
)

__all__ = [
    "ALL_DAYS",
    "DAY_NAMES",
    "DEFAULT",
    "PolicyError",
    "PolicyNeverActive",
    "SchedulePolicy",
    "Window",
    "in_window",
    "interval_hours",
    "next_active_due",
    "parse_policy",
    "policy_to_dict",
    "policy_zone",
    "summary",
    "validate_policy",
]


# --- drawing ----------------------------------------------------------------------------------
def next_active_due(
    now: datetime,
    p: SchedulePolicy,
    *,
    zone: ZoneInfo,
    min_h: float,
    max_h: float,
    rng: random.Random,
) -> datetime:
    """The next planned time after a success, aware UTC, whole seconds.

    One draw u = ``rng.randint`` over [min_h, max_h] hours in whole seconds
    (as ``policy.next_due``), then the first active second t at or after
    ``now`` (truncated to the second) with u weighted active seconds in
    [now, t). ``zone`` is the policy's (``policy_zone``); ``min_h``/``max_h``
    are its intervals (``interval_hours``). For a UTC ``now`` and an
    always-active policy of rate 1 (``DEFAULT``) this is exactly
    ``policy.next_due(now, min_h, max_h, rng)``. Raises PolicyNeverActive
    when a bounded walk finds no such time, ValueError if ``now`` is naive.
    """
    start = epoch(now)
    calendar = calendar_of(p)
    lo, hi = policy.interval_bounds_s(min_h, max_h)
    need = rng.randint(lo, hi)  # the single draw next_due makes
    if calendar.always:
        return from_epoch(start + need)
    found = None if calendar.weekly_weight_s <= 0 else active_time.walk(calendar, zone, start, need)
    if found is None:
        when = now.isoformat()
        raise PolicyNeverActive("policy", f"opens too rarely to give {need} s after {when}")
    return from_epoch(found)


def first_active_at(moment: datetime, p: SchedulePolicy, zone: ZoneInfo) -> datetime:
    """The first active second at or after ``moment`` (whole seconds, aware UTC): where a
    retry ``RetryDelaySeconds`` after a failure lands, so no dispatch falls outside a window.

    Raises PolicyNeverActive when a bounded walk finds none, ValueError if ``moment`` is naive.
    """
    start = epoch(moment)
    calendar = calendar_of(p)
    if calendar.always:
        return from_epoch(start)
    found = None if calendar.weekly_weight_s <= 0 else active_time.walk(calendar, zone, start, 0)
    if found is None:
        raise PolicyNeverActive("policy", f"opens no window after {moment.isoformat()}")
    return from_epoch(found)


def in_window(moment: datetime, p: SchedulePolicy, zone: ZoneInfo) -> bool:
    """Whether ``moment`` is active time: in a window, not on a quiet date, rate above 0.

    Raises ValueError if ``moment`` is naive.
    """
    return active_time.is_active(calendar_of(p), zone, moment)


def policy_zone(p: SchedulePolicy, service_zone: ZoneInfo) -> ZoneInfo:
    """The zone ``p``'s windows are read in: its own, else the service zone.

    Raises PolicyError for an unknown zone (``validate_policy`` reports it first).
    """
    if not p.time_zone:
        return service_zone
    problem = zone_problem(p.time_zone)
    if problem:
        raise PolicyError("time_zone", problem)
    return ZoneInfo(p.time_zone)


def interval_hours(p: SchedulePolicy, min_h: float, max_h: float) -> tuple[float, float]:
    """``p``'s [min, max] interval hours, ``ActionSchedule``'s ``min_h``/``max_h`` where unset."""
    low = min_h if p.min_interval_hours is None else p.min_interval_hours
    high = max_h if p.max_interval_hours is None else p.max_interval_hours
    return low, high


# --- validation -------------------------------------------------------------------------------
def validate_policy(
    p: SchedulePolicy,
    service_zone: str,
    *,
    default_min_h: float | None = None,
    default_max_h: float | None = None,
) -> None:
    """Raise one PolicyError with a sentence per bad field of ``p``; return if it is valid.

    Besides each field's own range: a policy that never opens (no window on
    a day of rate above 0), one closed for 400 days in a row by its quiet
    dates, one too sparse to reach its max interval within ten years.
    ``service_zone`` (the ``Timezone`` name) is checked when ``p`` uses it;
    ``default_*_h`` (``ActionSchedule``'s) check a one-sided interval override.
    """
    problems = policy_problems(p, default_min_h, default_max_h)
    zone = zone_problem(service_zone) if service_zone and not p.time_zone else None
    if zone:
        problems.append(("time_zone", f"is empty, so the service zone is used, and {zone}"))
    if problems:
        raise PolicyError.of(problems)


# --- summary ----------------------------------------------------------------------------------
def summary(p: SchedulePolicy) -> str:
    """One line for ``ScheduleInfo.policy``, e.g. ``Asia/Shanghai 08:00-23:00, Sat-Sun x2``.

    DEFAULT reads ``always active``; the zone is left out when it is the service's.
    """
    windows = " + ".join(_window_text(w) for w in p.windows) or "always active"
    parts = [f"{p.time_zone} {windows}" if p.time_zone else windows]
    if set(p.day_rates) != {1.0}:
        parts.append(_rates_text(p.day_rates))
    low, high = p.min_interval_hours, p.max_interval_hours
    if low is not None and high is not None:
        parts.append(f"every {low:g}-{high:g} h")
    elif low is not None or high is not None:
        parts.append(f"every {low:g} h or more" if low is not None else f"every {high:g} h or less")
    if len(p.quiet_dates) == 1:
        parts.append(f"quiet on {p.quiet_dates[0]}")
    elif p.quiet_dates:
        parts.append(f"{len(p.quiet_dates)} quiet dates {p.quiet_dates[0]}..{p.quiet_dates[-1]}")
    return ", ".join(parts)


def _window_text(w: Window) -> str:
    text = f"{time_text(w.start)}-{time_text(w.end)}"
    return text if w.days == ALL_DAYS else f"{text} {days_text(w.days)}"


def days_text(days: frozenset[int]) -> str:
    """Runs of consecutive weekdays: ``Mon-Fri``, ``Mon,Wed,Sat-Sun``."""
    runs: list[list[int]] = []
    for day in sorted(d for d in days if 0 <= d < 7):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    first_last = ((DAY_NAMES[r[0]], DAY_NAMES[r[-1]]) for r in runs)
    return ",".join(a.title() if a == b else f"{a.title()}-{b.title()}" for a, b in first_last)


def _rates_text(rates: tuple[float, ...]) -> str:
    groups: dict[float, list[int]] = {}
    for day, rate in enumerate(rates):
        groups.setdefault(rate, []).append(day)
    return ", ".join(f"{days_text(frozenset(d))} x{r:g}" for r, d in groups.items())
