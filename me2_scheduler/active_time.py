"""Active time: a weekly wall-clock calendar laid out on real instants, and walks through it.

A calendar says, per weekday, which wall-clock seconds of the day are active
and how much an active second weighs (its day's rate); some local dates are
quiet (no active time). An instant is active when its wall-clock time in the
zone is: the rule the cron port follows for fire times, applied to window
edges. So an edge in a spring-forward gap moves to the gap's end (the clock
skips those wall times, as a cron time in the gap never fires), and wall
times repeated at fall-back are active both times they occur (as a cron time
in the fold fires twice). Time is measured in real elapsed seconds.

Everything is whole epoch seconds; nothing reads a clock or does I/O (a
zone's rules come from ``zoneinfo``). Layouts are memoised per calendar,
zone and day, so a draw for a policy many avatars share costs little.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo

DAY_S = 86400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LAST_DAY = date.max.toordinal() - _EPOCH_ORDINAL - 2  # the walk stops before datetime overflows
# Every UTC offset is within 16 h, so the instants of a local date lie within
# this margin around its wall-clock span.
_MARGIN_S = 16 * 3600
_PROBE_S = 6 * 3600  # no zone changes its offset twice within 6 h
QUIET_LIMIT_DAYS = 400  # this many days in a row without active time: it never opens
WALK_LIMIT_DAYS = 4000  # no draw walks further than this (about 11 years)

Span = tuple[int, int]  # [start, end) in wall-clock seconds of a day, 0..86400
Piece = tuple[int, int, float]  # [start, end) in epoch seconds, and the rate of its seconds


@dataclass(frozen=True, eq=False)  # compared by identity: a cheap key for the layout caches
class WeekCalendar:
    """Active wall-clock spans per weekday (Monday first), the weekday rates, the quiet dates.

    ``spans[w]`` is sorted, disjoint and merged; a day with rate 0 has no
    active time whatever its spans.
    """

    spans: tuple[tuple[Span, ...], ...]
    rates: tuple[float, ...]
    quiet: frozenset[date]

    @cached_property
    def always(self) -> bool:
        """Every second is active and weighs 1: the walk is plain elapsed time."""
        full = ((0, DAY_S),)
        return not self.quiet and all(s == full for s in self.spans) and set(self.rates) == {1.0}

    @cached_property
    def weekly_weight_s(self) -> float:
        """Weighted active seconds in a week of wall-clock time (no DST, no quiet dates)."""
        return sum(
            r * sum(b - a for a, b in s) for r, s in zip(self.rates, self.spans, strict=True)
        )

    def active_weekday(self, weekday: int) -> bool:
        """Whether a (non-quiet) day of this weekday has any active time."""
        return self.rates[weekday] > 0 and bool(self.spans[weekday])


def week_calendar(
    windows: Iterable[tuple[int, int, Iterable[int]]],
    rates: Iterable[float],
    quiet: Iterable[date] = (),
) -> WeekCalendar:
    """The calendar of daily windows ``(start_s, end_s, weekdays)`` in wall-clock seconds.

    A window with ``end_s <= start_s`` crosses midnight into the next day
    (equal: it lasts 24 hours); its weekdays are the days it starts on. No
    windows at all means every second of every day.
    """
    per_day: list[list[Span]] = [[] for _ in range(7)]
    listed = list(windows)
    for start, end, weekdays in listed:
        length = (end - start) % DAY_S or DAY_S
        for day in weekdays:
            per_day[day].append((start, min(start + length, DAY_S)))
            if start + length > DAY_S:  # the part after midnight belongs to the next day
                per_day[(day + 1) % 7].append((0, start + length - DAY_S))
    if not listed:
        per_day = [[(0, DAY_S)] for _ in range(7)]
    spans = tuple(_merged(day) for day in per_day)
    return WeekCalendar(spans, tuple(float(r) for r in rates), frozenset(quiet))


def _merged(spans: list[Span]) -> tuple[Span, ...]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif start < end:
            out.append((start, end))
    return tuple(out)


def is_active(calendar: WeekCalendar, zone: ZoneInfo, moment: datetime) -> bool:
    """Whether ``moment`` (aware) is active: its wall-clock time is in a span of an open day.

    Raises ValueError if ``moment`` is naive.
    """
    if moment.utcoffset() is None:
        raise ValueError(f"time {moment.isoformat()} has no time zone")
    local = moment.astimezone(zone)
    day = local.date()
    if day in calendar.quiet or not calendar.rates[day.weekday()] > 0:
        return False
    second = local.hour * 3600 + local.minute * 60 + local.second
    return any(a <= second < b for a, b in calendar.spans[day.weekday()])


def walk(calendar: WeekCalendar, zone: ZoneInfo, start: int, need: float) -> int | None:
    """The first active second t >= ``start`` with ``need`` weighted active seconds in [start, t).

    Epoch seconds in and out. None when the calendar has no active time for
    ``QUIET_LIMIT_DAYS`` days in a row, or ``need`` is not met within
    ``WALK_LIMIT_DAYS``: the walk is bounded, never a hang.
    """
    first = start // DAY_S
    idle = 0
    for day in range(first, min(first + WALK_LIMIT_DAYS, _LAST_DAY)):
        pieces = _day_pieces(calendar, zone, day)
        idle = 0 if pieces else idle + 1
        if idle > QUIET_LIMIT_DAYS + 2:  # slack: UTC days and local dates do not line up
            return None
        for a, b, rate in pieces:
            if b <= start:
                continue
            a = max(a, start)
            if need <= 0:  # met exactly at the end of the previous piece
                return a
            # The float noise of need / rate must not add a second (1e-9 s is far below one).
            steps = max(0, math.ceil(need / rate - 1e-9))
            if a + steps < b:
                return a + steps
            need -= rate * (b - a)
    return None


@lru_cache(maxsize=16384)
def _day_pieces(calendar: WeekCalendar, zone: ZoneInfo, day: int) -> tuple[Piece, ...]:
    """The active pieces within UTC day ``day`` (days since the epoch), in order.

    Its instants belong to the local dates day-1 .. day+1; an instant has one
    wall-clock time, so pieces of different dates never overlap, though a
    fall-back at midnight can put a later date's piece first.
    """
    lo, hi = day * DAY_S, (day + 1) * DAY_S
    out: list[Piece] = []
    for ordinal in range(day - 1 + _EPOCH_ORDINAL, day + 2 + _EPOCH_ORDINAL):
        for a, b, rate in _date_pieces(calendar, zone, ordinal):
            if max(a, lo) < min(b, hi):
                out.append((max(a, lo), min(b, hi), rate))
    return tuple(sorted(out))


def _date_pieces(calendar: WeekCalendar, zone: ZoneInfo, ordinal: int) -> tuple[Piece, ...]:
    """The instants whose wall-clock time is in an active span of local date ``ordinal``."""
    local = date.fromordinal(ordinal)
    rate = calendar.rates[local.weekday()]
    spans = calendar.spans[local.weekday()]
    if not rate > 0 or not spans or local in calendar.quiet:
        return ()
    midnight = (ordinal - _EPOCH_ORDINAL) * DAY_S  # the wall clock read as UTC
    out: list[Piece] = []
    for run_start, run_end, offset in _offset_runs(zone, ordinal):
        for s, e in spans:  # while the offset holds, wall time = instant + offset
            a, b = max(midnight + s - offset, run_start), min(midnight + e - offset, run_end)
            if a >= b:
                continue
            if out and out[-1][1] == a:  # a span running through a gap: one piece
                a = out.pop()[0]
            out.append((a, b, rate))
    return tuple(out)


@lru_cache(maxsize=4096)
def _offset_runs(zone: ZoneInfo, ordinal: int) -> tuple[tuple[int, int, int], ...]:
    """``(start, end, utc_offset_s)`` runs covering every instant of local date ``ordinal``."""
    midnight = (ordinal - _EPOCH_ORDINAL) * DAY_S
    lo, hi = midnight - _MARGIN_S, midnight + DAY_S + _MARGIN_S
    runs: list[tuple[int, int, int]] = []
    start, offset = lo, _offset(zone, lo)
    probe = lo
    while probe < hi:
        nxt = min(probe + _PROBE_S, hi)
        if _offset(zone, nxt) == offset:
            probe = nxt
            continue
        change = _first_change(zone, probe, nxt, offset)
        runs.append((start, change, offset))
        start, offset, probe = change, _offset(zone, change), change
    runs.append((start, hi, offset))
    return tuple(runs)


def _first_change(zone: ZoneInfo, lo: int, hi: int, offset: int) -> int:
    """The first second in (lo, hi] whose offset is not ``offset`` (hi's is not)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(zone, mid) == offset:
            lo = mid
        else:
            hi = mid
    return hi


def _offset(zone: ZoneInfo, second: int) -> int:
    delta = datetime.fromtimestamp(second, timezone.utc).astimezone(zone).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())
