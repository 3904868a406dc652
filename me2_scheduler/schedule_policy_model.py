"""What a scheduling policy is: its types, its error, its compiled calendar, its rules.

``schedule_policy`` is the public face (drawing, validation, summary) and
re-exports these; ``schedule_policy_json`` reads and writes the JSON form.
The rules give one ``(field, sentence)`` per bad field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, time
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from me2_scheduler import active_time
from me2_scheduler.errors import SchedulerError

ALL_DAYS: frozenset[int] = frozenset(range(7))
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
MAX_WINDOWS = 100
MAX_QUIET_DATES = 1000
MAX_INTERVAL_HOURS = 8760.0  # a year, as ActionSchedule's bound
MAX_RATE = 1000.0
# A valid policy reaches its max interval well inside the walk's bound.
_SPARSE_LIMIT_DAYS = active_time.WALK_LIMIT_DAYS - 350

Problems = list[tuple[str, str]]


class PolicyError(SchedulerError):
    """A bad policy: ``field`` (``windows[0].start``) and ``problem``, one sentence.

    ``problems`` lists every bad field, this one first; the message is
    ``"<field>: <problem>"`` for each, joined by ``"; "``.
    """

    def __init__(self, field: str, problem: str, *more: tuple[str, str]) -> None:
        # One line whatever a quoted value holds (a newline, U+2028): an API
        # answer or a CLI error is one line per field.
        lines = tuple(
            (" ".join(f.split()), " ".join(p.split())) for f, p in ((field, problem), *more)
        )
        self.field, self.problem = lines[0]
        self.problems: tuple[tuple[str, str], ...] = lines
        super().__init__("; ".join(f"{f}: {p}" for f, p in lines))

    @classmethod
    def of(cls, problems: Problems) -> PolicyError:
        """One error for a non-empty list of ``(field, problem)``, the first as its own."""
        return cls(*problems[0], *problems[1:])


class PolicyNeverActive(PolicyError):
    """A draw found no time: 400 days in a row without active time, or 11 years in all."""


@dataclass(frozen=True)
class Window:
    """One daily active window in the policy's zone, ``[start, end)`` in wall-clock time.

    ``end <= start`` crosses midnight; ``end == start`` lasts 24 hours
    (00:00-00:00 is the whole day). ``days`` (0 = Monday … 6 = Sunday) are
    the days the window starts on.
    """

    start: time
    end: time
    days: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(self.days))


@dataclass(frozen=True)
class SchedulePolicy:
    """When an avatar is active and how often it acts; the defaults are today's behaviour.

    ``time_zone`` "" is the service ``Timezone``; no ``windows`` is always
    active; ``None`` intervals are ``ActionSchedule``'s; ``day_rates`` are per
    weekday (Monday first); ``quiet_dates`` are local dates with no active
    time (kept sorted and unique, so equal policies compare equal).
    """

    time_zone: str = ""
    windows: tuple[Window, ...] = ()
    min_interval_hours: float | None = None
    max_interval_hours: float | None = None
    day_rates: tuple[float, ...] = (1.0,) * 7
    quiet_dates: tuple[date, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "day_rates", tuple(float(r) for r in self.day_rates))
        object.__setattr__(self, "quiet_dates", tuple(sorted(set(self.quiet_dates))))


DEFAULT = SchedulePolicy()


@lru_cache(maxsize=1024)
def calendar_of(p: SchedulePolicy) -> active_time.WeekCalendar:
    """``p`` compiled once: equal policies (most avatars share a few) share their layouts."""
    windows = [(_seconds(w.start), _seconds(w.end), w.days & ALL_DAYS) for w in p.windows]
    rates = (r if math.isfinite(r) and r > 0 else 0.0 for r in p.day_rates)
    return active_time.week_calendar(windows, rates, p.quiet_dates)


def _seconds(moment: time) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def time_text(moment: time) -> str:
    """``HH:MM``, or ``HH:MM:SS`` when it has seconds."""
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


# --- rules -------------------------------------------------------------------------------------
def zone_problem(name: str) -> str | None:
    """Why ``name`` is not a usable IANA zone, or None when it is."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"{name!r} is not a known IANA time zone"
    return None


def policy_problems(
    p: SchedulePolicy,
    default_min_h: float | None = None,
    default_max_h: float | None = None,
) -> Problems:
    """Every ``(field, sentence)`` wrong with ``p``, in field order; [] when it is valid.

    ``default_*_h`` are ``ActionSchedule``'s intervals, which a one-sided
    override must fit. The never-opens rules run once every field is right
    on its own.
    """
    zone = zone_problem(p.time_zone) if p.time_zone else None
    problems = [("time_zone", zone)] if zone else []
    problems += _window_problems(p) + _interval_problems(p)
    problems += _interval_order_problems(p, default_min_h, default_max_h)
    problems += _rate_problems(p) + _quiet_problems(p)
    if problems:
        return problems
    max_h = p.max_interval_hours if p.max_interval_hours is not None else default_max_h
    return _never_open_problems(p, calendar_of(p), max_h or 0.0)


def _window_problems(p: SchedulePolicy) -> Problems:
    if len(p.windows) > MAX_WINDOWS:
        return [("windows", f"has {len(p.windows)} windows; at most {MAX_WINDOWS} are allowed")]
    problems = []
    for i, w in enumerate(p.windows):
        if not w.days:
            problems.append((f"windows[{i}].days", "is empty; leave it out for every day"))
        elif not w.days <= ALL_DAYS:
            problems.append((f"windows[{i}].days", "holds a day outside 0 (Monday) to 6 (Sunday)"))
    return problems


def _interval_problems(p: SchedulePolicy) -> Problems:
    problems = []
    for name in ("min_interval_hours", "max_interval_hours"):
        hours = getattr(p, name)
        if hours is not None and not 0 < hours <= MAX_INTERVAL_HOURS:
            bound = f"{MAX_INTERVAL_HOURS:g}"
            problems.append((name, f"must be above 0 and at most {bound}, got {hours:g}"))
    return problems


def _interval_order_problems(
    p: SchedulePolicy, default_min_h: float | None, default_max_h: float | None
) -> Problems:
    low = p.min_interval_hours if p.min_interval_hours is not None else default_min_h
    high = p.max_interval_hours if p.max_interval_hours is not None else default_max_h
    if low is None or high is None or low <= high:
        return []
    name = "min_interval_hours" if p.min_interval_hours is not None else "max_interval_hours"
    return [(name, f"makes the minimum interval ({low:g} h) exceed the maximum ({high:g} h)")]


def _rate_problems(p: SchedulePolicy) -> Problems:
    if len(p.day_rates) != 7:
        return [("day_rates", f"must have 7 rates (Monday to Sunday), got {len(p.day_rates)}")]
    problems = [
        (f"day_rates.{DAY_NAMES[i]}", f"must be 0 or more and at most {MAX_RATE:g}, got {r:g}")
        for i, r in enumerate(p.day_rates)
        if not 0 <= r <= MAX_RATE
    ]
    if not problems and not any(p.day_rates):
        problems.append(("day_rates", "are all 0, so the policy never opens"))
    return problems


def _quiet_problems(p: SchedulePolicy) -> Problems:
    if len(p.quiet_dates) > MAX_QUIET_DATES:
        count = len(p.quiet_dates)
        return [("quiet_dates", f"has {count} dates; at most {MAX_QUIET_DATES} are allowed")]
    return []


def _never_open_problems(
    p: SchedulePolicy, calendar: active_time.WeekCalendar, max_h: float
) -> Problems:
    if calendar.weekly_weight_s <= 0:
        return [("windows", "open only on days whose rate is 0, so the policy never opens")]
    run = closed_run(calendar)
    if run is not None:
        first, last = run
        limit = active_time.QUIET_LIMIT_DAYS
        return [("quiet_dates", f"leave no active day from {first} to {last} ({limit} days)")]
    days = max_h * 3600 / calendar.weekly_weight_s * 7 + len(p.quiet_dates)
    if days <= _SPARSE_LIMIT_DAYS:
        return []
    weekly = calendar.weekly_weight_s / 3600
    return [
        (
            "windows",
            f"give {weekly:.3g} weighted active hours a week, too few to reach the maximum"
            f" interval of {max_h:g} h within ten years",
        )
    ]


def closed_run(calendar: active_time.WeekCalendar) -> tuple[date, date] | None:
    """The first run of ``QUIET_LIMIT_DAYS`` days without active time the quiet dates make."""
    if not calendar.quiet:
        return None
    first, last = min(calendar.quiet), max(calendar.quiet)
    run_start: date | None = None
    for ordinal in range(first.toordinal() - 7, last.toordinal() + 8):
        day = date.fromordinal(ordinal)
        if day not in calendar.quiet and calendar.active_weekday(day.weekday()):
            run_start = None
            continue
        run_start = run_start or day
        if ordinal - run_start.toordinal() + 1 >= active_time.QUIET_LIMIT_DAYS:
            return run_start, day
    return None
