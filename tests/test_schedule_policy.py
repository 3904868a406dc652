"""Scheduling policies by example: draws in active time, windows, DST edges, retries.
Expected times are worked out by hand (rules stated beside each case), not by the code."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from me2_scheduler import policy
from me2_scheduler.errors import SchedulerError
from me2_scheduler.schedule_policy import (
    DEFAULT,
    PolicyError,
    PolicyNeverActive,
    SchedulePolicy,
    Window,
    first_active_at,
    in_window,
    next_active_due,
    validate_policy,
)
from tests.fixtures_schedule_policy import (
    ALL_ZERO,
    CHRISTMAS,
    EIGHT_TO_NOON,
    FRI,
    FRIDAY_NIGHT,
    HOUR,
    MIN,
    MON,
    NEW_YORK,
    NY,
    SUN,
    UTC,
    WEEKDAYS,
    draw,
    only,
    rated,
    rates,
    utc,
    window,
)

MONDAY_8_TO_8 = only("08:00", "08:00", MON)  # 08:00-08:00 lasts 24 h from Monday 08:00
OFFICE_HOURS = only("09:00", "17:00", *WEEKDAYS)
WORKDAYS_BUT_CHRISTMAS = replace(only("09:00", "17:00"), quiet_dates=(CHRISTMAS,))
NIGHTS_BUT_CHRISTMAS = replace(only("22:00", "02:00"), quiet_dates=(CHRISTMAS,))


def cases(zone: str, rows: list[tuple], prefix: str = "") -> list:
    """``(policy, zone, now, seconds drawn, expected)`` params of ``rows``
    ``(id, policy, now, seconds drawn, expected)``, ids led by ``prefix``; a policy given
    as a tuple is the ``(start, end, *days)`` of its one window."""
    return [
        pytest.param(only(*p) if isinstance(p, tuple) else p, zone, *rest, id=prefix + name)
        for name, p, *rest in rows
    ]


# (id, policy, now, active seconds drawn, expected next time)
UTC_DRAWS = [
    ("inside", EIGHT_TO_NOON, utc(2026, 1, 5, 9), 2 * HOUR, utc(2026, 1, 5, 11)),
    ("carry", EIGHT_TO_NOON, utc(2026, 1, 5, 11), 2 * HOUR, utc(2026, 1, 6, 9)),
    ("before", EIGHT_TO_NOON, utc(2026, 1, 5, 3), HOUR, utc(2026, 1, 5, 9)),
    # Used up exactly at 12:00, which is outside [08:00, 12:00): the next opening.
    ("at-end", EIGHT_TO_NOON, utc(2026, 1, 5, 8), 4 * HOUR, utc(2026, 1, 6, 8)),
    ("fraction", EIGHT_TO_NOON, utc(2026, 1, 5, 9, 0, 0, 999999), 1, utc(2026, 1, 5, 9, 0, 1)),
    # Friday's 22:00-02:00 runs into Saturday, and only from Friday.
    ("night", FRIDAY_NIGHT, utc(2026, 1, 9, 23), 2 * HOUR, utc(2026, 1, 10, 1)),
    ("next-friday", FRIDAY_NIGHT, utc(2026, 1, 9, 23), 4 * HOUR, utc(2026, 1, 16, 23)),
    # Friday 16:00: one hour left, then Monday.
    ("weekdays", OFFICE_HOURS, utc(2026, 1, 9, 16), 2 * HOUR, utc(2026, 1, 12, 10)),
    # Friday 20-24 gives 4 h; Saturday (rate 2) gives the other 4 h in 2 h.
    ("rate-2", rated(sat=2), utc(2026, 1, 9, 20), 8 * HOUR, utc(2026, 1, 10, 2)),
    ("rate-half", rated(mon=0.5), utc(2026, 1, 5), 3 * HOUR, utc(2026, 1, 5, 6)),
    ("rate-0-skipped", rated(sun=0), utc(2026, 1, 10, 23), 2 * HOUR, utc(2026, 1, 12, 1)),
    ("quiet", WORKDAYS_BUT_CHRISTMAS, utc(2026, 12, 24, 16), 2 * HOUR, utc(2026, 12, 26, 10)),
    # The 24th's night runs into the quiet 25th (lost); the 25th's night counts from midnight.
    ("quiet-night", NIGHTS_BUT_CHRISTMAS, utc(2026, 12, 24, 23), 2 * HOUR, utc(2026, 12, 26, 1)),
    ("seconds", only("10:00:00", "10:00:10"), utc(2026, 1, 5, 9), 15, utc(2026, 1, 6, 10, 0, 5)),
    ("start-equals-end", MONDAY_8_TO_8, utc(2026, 1, 5, 20), 13 * HOUR, utc(2026, 1, 12, 9)),
]
# Shanghai is UTC+8: 22:30 local, half an hour left, then 08:00 local = 00:00 UTC.
SHANGHAI_DRAWS = [
    ("zone", ("08:00", "23:00"), utc(2026, 1, 5, 14, 30), HOUR, utc(2026, 1, 6, 0, 30)),
]

# Window edges in DST gaps and folds follow the wall clock.
NY_DRAWS = [
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    # 01:30-03:30 is 01:30-02:00 EST then 03:00-03:30 EDT: one hour, without a break.
    ("spans-gap", ("01:30", "03:30"), utc(2026, 3, 8, 6, 30), 45 * MIN, utc(2026, 3, 8, 7, 15)),
    # A start in the gap opens when the clock reaches it: 03:00 EDT.
    ("start-in-gap", ("02:30", "04:00"), utc(2026, 3, 8, 5), 30 * MIN, utc(2026, 3, 8, 7, 30)),
    # An end in the gap closes when the clock jumps over it (07:00 UTC); then the 9th (EDT).
    ("end-in-gap", ("00:00", "02:30"), utc(2026, 3, 8, 6, 30), HOUR, utc(2026, 3, 9, 4, 30)),
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC): 01:00-01:30 happens
    # twice (05:00-05:30 and 06:00-06:30 UTC), and is active both times.
    ("fold", ("01:00", "01:30"), utc(2026, 11, 1, 4), 45 * MIN, utc(2026, 11, 1, 6, 15)),
]
LONDON_DRAWS = [
    # London, 2026-03-29: 01:00 GMT becomes 02:00 BST; 01:30-02:30 is 02:00-02:30 BST.
    ("gap", ("01:30", "02:30"), utc(2026, 3, 29), 10 * MIN, utc(2026, 3, 29, 1, 10)),
    # London, 2026-10-25: 02:00 BST becomes 01:00 GMT; 01:15-01:45 twice.
    ("fold", ("01:15", "01:45"), utc(2026, 10, 25), 40 * MIN, utc(2026, 10, 25, 1, 25)),
]
LORD_HOWE_DRAWS = [
    # Lord Howe, 2026-10-04: 02:00 +10:30 becomes 02:30 +11 (15:30 UTC on the 3rd).
    ("half-hour-gap", ("02:15", "03:00"), utc(2026, 10, 3, 12), 10 * MIN, utc(2026, 10, 3, 15, 40)),
    # Lord Howe, 2026-04-05: 02:00 +11 becomes 01:30 +10:30 (15:00 UTC on the 4th);
    # 01:45-02:15 is 01:45-02:00 +11 (14:45-15:00), then 01:45-02:15 +10:30 (15:15-15:45).
    ("half-hour-fold", ("01:45", "02:15"), utc(2026, 4, 4, 14), 30 * MIN, utc(2026, 4, 4, 15, 30)),
]
SANTIAGO_DRAWS = [
    # Santiago, 2026-09-06: midnight -04 becomes 01:00 -03 (04:00 UTC); the day starts at 01:00.
    ("gap-at-midnight", ("00:15", "01:30"), utc(2026, 9, 6, 3), 10 * MIN, utc(2026, 9, 6, 4, 10)),
    # Santiago, 2026-04-05: midnight -03 becomes 23:00 -04 on the 4th (03:00 UTC): 23:30-00:30
    # is 23:30-24:00 -03 (02:30-03:00 UTC), then 23:30-00:30 -04 (03:30-04:30 UTC).
    ("fold-at-midnight", ("23:30", "00:30"), utc(2026, 4, 5, 2), 45 * MIN, utc(2026, 4, 5, 3, 45)),
]
# Apia skipped Friday 2011-12-30 whole (-10 to +14): a Friday-only window waits a week. From
# Thursday 12:00 -10 (22:00 UTC), the next Friday is 2012-01-06; 01:00 +14 is 11:00 UTC on the 5th.
APIA_DRAWS = [
    ("skipped-day", ("00:00", "00:00", FRI), utc(2011, 12, 29, 22), HOUR, utc(2012, 1, 5, 11)),
]
DRAW_CASES = [
    *cases("UTC", UTC_DRAWS),
    *cases("Asia/Shanghai", SHANGHAI_DRAWS),
    *cases(NY, NY_DRAWS, "ny-"),
    *cases("Europe/London", LONDON_DRAWS, "london-"),
    *cases("Australia/Lord_Howe", LORD_HOWE_DRAWS, "lord-howe-"),
    *cases("America/Santiago", SANTIAGO_DRAWS, "santiago-"),
    *cases("Pacific/Apia", APIA_DRAWS, "apia-"),
]


@pytest.mark.parametrize(("p", "zone", "now", "seconds", "expected"), DRAW_CASES)
def test_the_next_time_uses_up_the_drawn_active_time(p, zone, now, seconds, expected):
    due = draw(now, p, seconds, zone)
    assert due == expected
    assert due.tzinfo is UTC and due.microsecond == 0
    assert in_window(due, p, ZoneInfo(zone))


@pytest.mark.parametrize(
    "now",
    [utc(2026, 1, 5, 9), utc(2026, 3, 8, 6, 59, 59, 999999), utc(1999, 12, 31, 23, 59, 59, 1)],
)
@pytest.mark.parametrize(("low", "high"), [(2, 6), (20 / 3600, 60 / 3600), (0.5, 0.5), (1, 48)])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_the_default_policy_draws_exactly_what_next_due_draws(now, low, high, seed):
    reference, rng = random.Random(seed), random.Random(seed)
    expected = policy.next_due(now, low, high, reference)
    assert next_active_due(now, DEFAULT, zone=NEW_YORK, min_h=low, max_h=high, rng=rng) == expected
    assert rng.getstate() == reference.getstate()  # the same single draw


IN_WINDOW_CASES = [
    (FRIDAY_NIGHT, "UTC", utc(2026, 1, 9, 21, 59, 59), False),
    (FRIDAY_NIGHT, "UTC", utc(2026, 1, 9, 22), True),
    (FRIDAY_NIGHT, "UTC", utc(2026, 1, 10, 1, 59, 59), True),  # Saturday, from Friday
    (FRIDAY_NIGHT, "UTC", utc(2026, 1, 10, 2), False),
    (FRIDAY_NIGHT, "UTC", utc(2026, 1, 10, 23), False),  # Saturday's own night: no window
    (FRIDAY_NIGHT, "UTC", utc(2026, 1, 11, 1), False),
    (rated(sun=0), "UTC", utc(2026, 1, 11, 12), False),
    (rated(sun=0), "UTC", utc(2026, 1, 12, 12), True),
    (SchedulePolicy(quiet_dates=(CHRISTMAS,)), "UTC", utc(2026, 12, 25, 12), False),
    (SchedulePolicy(quiet_dates=(CHRISTMAS,)), "Asia/Shanghai", utc(2026, 12, 25, 20), True),
    (MONDAY_8_TO_8, "UTC", utc(2026, 1, 6, 7, 59), True),
    (MONDAY_8_TO_8, "UTC", utc(2026, 1, 6, 8), False),
    # New York's fold: 01:15 EDT, 01:45 EDT, 01:15 EST; its gap: 01:59:59 EST, 03:00 EDT.
    (only("01:00", "01:30"), NY, utc(2026, 11, 1, 5, 15), True),
    (only("01:00", "01:30"), NY, utc(2026, 11, 1, 5, 45), False),
    (only("01:00", "01:30"), NY, utc(2026, 11, 1, 6, 15), True),
    (only("02:30", "04:00"), NY, utc(2026, 3, 8, 6, 59, 59), False),
    (only("02:30", "04:00"), NY, utc(2026, 3, 8, 7), True),
]


@pytest.mark.parametrize(("p", "zone", "moment", "expected"), IN_WINDOW_CASES)
def test_in_window_reads_the_wall_clock_of_the_policy_zone(p, zone, moment, expected):
    assert in_window(moment, p, ZoneInfo(zone)) is expected


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="no time zone"):
        next_active_due(
            datetime(2026, 1, 1), DEFAULT, zone=NEW_YORK, min_h=2, max_h=6, rng=random.Random()
        )
    with pytest.raises(ValueError, match="no time zone"):
        in_window(datetime(2026, 1, 1), EIGHT_TO_NOON, NEW_YORK)


# --- policies that never open -----------------------------------------------------------------
NO_DAYS = SchedulePolicy(windows=(Window(time(8), time(9), frozenset()),))
# Sunday 22:00-02:00 also gives nothing: its Monday part is cut off by Monday's rate 0.
SUNDAYS_AT_RATE_0 = SchedulePolicy(
    windows=(window("08:00", "09:00", SUN), window("22:00", "02:00", SUN)),
    day_rates=rates(sun=0, mon=0),
)
QUIET_500_DAYS = SchedulePolicy(
    quiet_dates=tuple(date(2026, 1, 1) + timedelta(d) for d in range(500))
)
NEVER_OPEN = [
    pytest.param(NO_DAYS, "windows[0].days", "is empty", id="no-days"),
    pytest.param(rated(**ALL_ZERO), "day_rates", "never opens", id="0s"),
    pytest.param(SUNDAYS_AT_RATE_0, "windows", "never opens", id="windows-only-on-rate-0-days"),
    pytest.param(
        QUIET_500_DAYS, "quiet_dates", "no active day from 2026-01-01", id="every-day-quiet"
    ),
]


@pytest.mark.parametrize(("p", "field", "phrase"), NEVER_OPEN)
def test_a_policy_that_never_opens_is_refused_and_its_draw_gives_up(p, field, phrase):
    with pytest.raises(PolicyError) as refused:
        validate_policy(p, "UTC")
    assert (refused.value.field, len(refused.value.problems)) == (field, 1)
    assert phrase in refused.value.problem
    with pytest.raises(PolicyNeverActive) as gave_up:
        next_active_due(utc(2026, 1, 2), p, zone=NEW_YORK, min_h=2, max_h=6, rng=random.Random(1))
    assert isinstance(gave_up.value, PolicyError) and isinstance(gave_up.value, SchedulerError)
    assert str(gave_up.value).startswith("policy: ")


def test_a_policy_too_sparse_for_its_max_interval_is_refused_and_its_draw_gives_up():
    # One minute a week cannot give a year of active time within the walk's bound.
    p = SchedulePolicy(windows=(window("00:00", "00:01", SUN),), max_interval_hours=8760)
    with pytest.raises(PolicyError, match="too few"):
        validate_policy(p, "UTC")
    with pytest.raises(PolicyNeverActive):
        next_active_due(
            utc(2026, 1, 1), p, zone=NEW_YORK, min_h=8760, max_h=8760, rng=random.Random(1)
        )


def test_quiet_dates_short_of_the_bound_only_delay_the_next_time():
    p = SchedulePolicy(quiet_dates=tuple(date(2026, 1, 1) + timedelta(d) for d in range(390)))
    validate_policy(p, "UTC")
    due = draw(utc(2026, 1, 1), p, HOUR)
    assert due == utc(2026, 1, 1) + timedelta(days=390, hours=1)


def test_a_retry_lands_on_the_first_active_second_from_its_delay_on():
    evenings = only("18:00", "22:00")
    assert first_active_at(utc(2026, 12, 4, 12), evenings, UTC) == utc(2026, 12, 4, 18)
    assert first_active_at(utc(2026, 12, 4, 19, 30, 5, 900), evenings, UTC) == utc(
        2026, 12, 4, 19, 30, 5
    )
    assert first_active_at(utc(2026, 12, 4, 22), evenings, UTC) == utc(2026, 12, 5, 18)


def test_with_the_default_policy_a_retry_is_exactly_its_delay_later():
    moment = utc(2026, 12, 4, 3, 17, 41)
    assert first_active_at(moment, DEFAULT, NEW_YORK) == moment


def test_a_retry_of_a_policy_that_never_opens_gives_up():
    with pytest.raises(PolicyNeverActive):
        first_active_at(utc(2026, 12, 4), SchedulePolicy(day_rates=(0.0,) * 7), UTC)
