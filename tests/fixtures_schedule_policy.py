"""Helpers of the scheduling-policy tests: times, windows, policies, rates."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

from me2_scheduler.schedule_policy import (
    SchedulePolicy,
    Window,
    next_active_due,
)

UTC = timezone.utc
ALL_ZERO = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), 0)
NY = "America/New_York"
NEW_YORK = ZoneInfo(NY)
SHANGHAI = ZoneInfo("Asia/Shanghai")
APIA = ZoneInfo("Pacific/Apia")
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
WEEKDAYS = frozenset(range(5))
MIN = 60
HOUR = 3600


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def window(start: str, end: str, *days: int) -> Window:
    return Window(time.fromisoformat(start), time.fromisoformat(end), frozenset(days or range(7)))


def only(start: str, end: str, *days: int) -> SchedulePolicy:
    """A policy of one window."""
    return SchedulePolicy(windows=(window(start, end, *days),))


def days(value: object) -> dict:
    """The JSON form of a policy of one 08:00-09:00 window on ``value``."""
    return {"windows": [{"start": "08:00", "end": "09:00", "days": value}]}


def rates(**by_day: float) -> tuple[float, ...]:
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return tuple(by_day.get(name, 1.0) for name in names)


def rated(**by_day: float) -> SchedulePolicy:
    """A policy of no windows whose day rates are ``by_day`` (others 1)."""
    return SchedulePolicy(day_rates=rates(**by_day))


class FixedDraw(random.Random):
    """A random source whose randint returns ``seconds``, and checks it was in bounds."""

    def __init__(self, seconds: int) -> None:
        super().__init__(0)
        self.seconds = seconds
        self.calls: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.calls.append((a, b))
        assert a <= self.seconds <= b
        return self.seconds


def draw(now: datetime, p: SchedulePolicy, seconds: int, zone: str = "UTC") -> datetime:
    rng = FixedDraw(seconds)
    due = next_active_due(now, p, zone=ZoneInfo(zone), min_h=1e-9, max_h=9000, rng=rng)
    assert len(rng.calls) == 1, "one draw per next time, as policy.next_due"
    return due


EIGHT_TO_NOON = SchedulePolicy(windows=(window("08:00", "12:00"),))
FRIDAY_NIGHT = SchedulePolicy(windows=(window("22:00", "02:00", FRI),))
CHRISTMAS = date(2026, 12, 25)  # a Friday
NEW_YEAR = date(2027, 1, 1)
