"""Scheduling policies by example: draws in active time, windows, DST edges, the JSON form.

Expected times are worked out by hand from the windows and the zones' DST
rules (stated beside each case), never by calling the code under test.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone
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
    interval_hours,
    next_active_due,
    parse_policy,
    policy_to_dict,
    policy_zone,
    summary,
    validate_policy,
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

DRAW_CASES = [
    # (policy, zone, now, active seconds drawn, expected next time)
    pytest.param(
        EIGHT_TO_NOON, "UTC", utc(2026, 1, 5, 9), 2 * HOUR, utc(2026, 1, 5, 11), id="inside"
    ),
    pytest.param(
        EIGHT_TO_NOON, "UTC", utc(2026, 1, 5, 11), 2 * HOUR, utc(2026, 1, 6, 9), id="carry"
    ),
    pytest.param(EIGHT_TO_NOON, "UTC", utc(2026, 1, 5, 3), HOUR, utc(2026, 1, 5, 9), id="before"),
    # Used up exactly at 12:00, which is outside [08:00, 12:00): the next opening.
    pytest.param(
        EIGHT_TO_NOON, "UTC", utc(2026, 1, 5, 8), 4 * HOUR, utc(2026, 1, 6, 8), id="at-end"
    ),
    pytest.param(
        EIGHT_TO_NOON,
        "UTC",
        utc(2026, 1, 5, 9, 0, 0, 999999),
        1,
        utc(2026, 1, 5, 9, 0, 1),
        id="fraction",
    ),
    # Friday's 22:00-02:00 runs into Saturday, and only from Friday.
    pytest.param(
        FRIDAY_NIGHT, "UTC", utc(2026, 1, 9, 23), 2 * HOUR, utc(2026, 1, 10, 1), id="night"
    ),
    pytest.param(
        FRIDAY_NIGHT, "UTC", utc(2026, 1, 9, 23), 4 * HOUR, utc(2026, 1, 16, 23), id="next-friday"
    ),
    pytest.param(
        SchedulePolicy(windows=(window("09:00", "17:00", *WEEKDAYS),)),
        "UTC",
        utc(2026, 1, 9, 16),  # Friday 16:00: one hour left, then Monday
        2 * HOUR,
        utc(2026, 1, 12, 10),
        id="weekdays",
    ),
    # Friday 20-24 gives 4 h; Saturday (rate 2) gives the other 4 h in 2 h.
    pytest.param(
        SchedulePolicy(day_rates=rates(sat=2)),
        "UTC",
        utc(2026, 1, 9, 20),
        8 * HOUR,
        utc(2026, 1, 10, 2),
        id="rate-2",
    ),
    pytest.param(
        SchedulePolicy(day_rates=rates(mon=0.5)),
        "UTC",
        utc(2026, 1, 5),
        3 * HOUR,
        utc(2026, 1, 5, 6),
        id="rate-half",
    ),
    pytest.param(
        SchedulePolicy(day_rates=rates(sun=0)),
        "UTC",
        utc(2026, 1, 10, 23),
        2 * HOUR,
        utc(2026, 1, 12, 1),
        id="rate-0-skipped",
    ),
    pytest.param(
        SchedulePolicy(windows=(window("09:00", "17:00"),), quiet_dates=(CHRISTMAS,)),
        "UTC",
        utc(2026, 12, 24, 16),
        2 * HOUR,
        utc(2026, 12, 26, 10),
        id="quiet",
    ),
    # The 24th's night runs into the quiet 25th (lost); the 25th's night counts from midnight.
    pytest.param(
        SchedulePolicy(windows=(window("22:00", "02:00"),), quiet_dates=(CHRISTMAS,)),
        "UTC",
        utc(2026, 12, 24, 23),
        2 * HOUR,
        utc(2026, 12, 26, 1),
        id="quiet-night",
    ),
    # Shanghai is UTC+8: 22:30 local, half an hour left, then 08:00 local = 00:00 UTC.
    pytest.param(
        SchedulePolicy(windows=(window("08:00", "23:00"),)),
        "Asia/Shanghai",
        utc(2026, 1, 5, 14, 30),
        HOUR,
        utc(2026, 1, 6, 0, 30),
        id="zone",
    ),
    pytest.param(
        SchedulePolicy(windows=(window("10:00:00", "10:00:10"),)),
        "UTC",
        utc(2026, 1, 5, 9),
        15,
        utc(2026, 1, 6, 10, 0, 5),
        id="seconds",
    ),
    # 08:00-08:00 lasts 24 h from Monday 08:00.
    pytest.param(
        SchedulePolicy(windows=(window("08:00", "08:00", MON),)),
        "UTC",
        utc(2026, 1, 5, 20),
        13 * HOUR,
        utc(2026, 1, 12, 9),
        id="start-equals-end",
    ),
]


@pytest.mark.parametrize(("p", "zone", "now", "seconds", "expected"), DRAW_CASES)
def test_the_next_time_uses_up_the_drawn_active_time(p, zone, now, seconds, expected):
    due = draw(now, p, seconds, zone)
    assert due == expected
    assert due.tzinfo is UTC and due.microsecond == 0
    assert in_window(due, p, ZoneInfo(zone))


DST_CASES = [
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    # 01:30-03:30 is 01:30-02:00 EST then 03:00-03:30 EDT: one hour, without a break.
    pytest.param(
        "America/New_York",
        window("01:30", "03:30"),
        utc(2026, 3, 8, 6, 30),
        45 * MIN,
        utc(2026, 3, 8, 7, 15),
        id="ny-spans-gap",
    ),
    # A start in the gap opens when the clock reaches it: 03:00 EDT.
    pytest.param(
        "America/New_York",
        window("02:30", "04:00"),
        utc(2026, 3, 8, 5),
        30 * MIN,
        utc(2026, 3, 8, 7, 30),
        id="ny-start-in-gap",
    ),
    # An end in the gap closes when the clock jumps over it (07:00 UTC); then the 9th (EDT).
    pytest.param(
        "America/New_York",
        window("00:00", "02:30"),
        utc(2026, 3, 8, 6, 30),
        HOUR,
        utc(2026, 3, 9, 4, 30),
        id="ny-end-in-gap",
    ),
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC): 01:00-01:30 happens
    # twice (05:00-05:30 and 06:00-06:30 UTC), and is active both times.
    pytest.param(
        "America/New_York",
        window("01:00", "01:30"),
        utc(2026, 11, 1, 4),
        45 * MIN,
        utc(2026, 11, 1, 6, 15),
        id="ny-fold",
    ),
    # London, 2026-03-29: 01:00 GMT becomes 02:00 BST; 01:30-02:30 is 02:00-02:30 BST.
    pytest.param(
        "Europe/London",
        window("01:30", "02:30"),
        utc(2026, 3, 29),
        10 * MIN,
        utc(2026, 3, 29, 1, 10),
        id="london-gap",
    ),
    # London, 2026-10-25: 02:00 BST becomes 01:00 GMT; 01:15-01:45 twice.
    pytest.param(
        "Europe/London",
        window("01:15", "01:45"),
        utc(2026, 10, 25),
        40 * MIN,
        utc(2026, 10, 25, 1, 25),
        id="london-fold",
    ),
    # Lord Howe, 2026-10-04: 02:00 +10:30 becomes 02:30 +11 (15:30 UTC on the 3rd).
    pytest.param(
        "Australia/Lord_Howe",
        window("02:15", "03:00"),
        utc(2026, 10, 3, 12),
        10 * MIN,
        utc(2026, 10, 3, 15, 40),
        id="lord-howe-half-hour-gap",
    ),
    # Lord Howe, 2026-04-05: 02:00 +11 becomes 01:30 +10:30 (15:00 UTC on the 4th);
    # 01:45-02:15 is 01:45-02:00 +11 (14:45-15:00), then 01:45-02:15 +10:30 (15:15-15:45).
    pytest.param(
        "Australia/Lord_Howe",
        window("01:45", "02:15"),
        utc(2026, 4, 4, 14),
        30 * MIN,
        utc(2026, 4, 4, 15, 30),
        id="lord-howe-half-hour-fold",
    ),
    # Santiago, 2026-09-06: midnight -04 becomes 01:00 -03 (04:00 UTC); the day starts at 01:00.
    pytest.param(
        "America/Santiago",
        window("00:15", "01:30"),
        utc(2026, 9, 6, 3),
        10 * MIN,
        utc(2026, 9, 6, 4, 10),
        id="santiago-gap-at-midnight",
    ),
    # Santiago, 2026-04-05: midnight -03 becomes 23:00 -04 on the 4th (03:00 UTC): 23:30-00:30
    # is 23:30-24:00 -03 (02:30-03:00 UTC), then 23:30-00:30 -04 (03:30-04:30 UTC).
    pytest.param(
        "America/Santiago",
        window("23:30", "00:30"),
        utc(2026, 4, 5, 2),
        45 * MIN,
        utc(2026, 4, 5, 3, 45),
        id="santiago-fold-at-midnight",
    ),
    # Apia skipped Friday 2011-12-30 whole (-10 to +14): a Friday-only window waits a week.
    pytest.param(
        "Pacific/Apia",
        window("00:00", "00:00", FRI),
        datetime(2011, 12, 29, 12, tzinfo=APIA),
        HOUR,
        datetime(2012, 1, 6, 1, tzinfo=APIA),
        id="apia-skipped-day",
    ),
]


@pytest.mark.parametrize(("zone", "w", "now", "seconds", "expected"), DST_CASES)
def test_window_edges_in_dst_gaps_and_folds_follow_the_wall_clock(zone, w, now, seconds, expected):
    p = SchedulePolicy(windows=(w,))
    due = draw(now, p, seconds, zone)
    assert due == expected
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
    (SchedulePolicy(day_rates=rates(sun=0)), "UTC", utc(2026, 1, 11, 12), False),
    (SchedulePolicy(day_rates=rates(sun=0)), "UTC", utc(2026, 1, 12, 12), True),
    (SchedulePolicy(quiet_dates=(CHRISTMAS,)), "UTC", utc(2026, 12, 25, 12), False),
    (SchedulePolicy(quiet_dates=(CHRISTMAS,)), "Asia/Shanghai", utc(2026, 12, 25, 20), True),
    (only("08:00", "08:00", MON), "UTC", utc(2026, 1, 6, 7, 59), True),
    (only("08:00", "08:00", MON), "UTC", utc(2026, 1, 6, 8), False),
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
NEVER_OPEN = [
    pytest.param(
        SchedulePolicy(windows=(Window(time(8), time(9), frozenset()),)),
        "windows[0].days",
        "is empty",
        id="no-days",
    ),
    pytest.param(SchedulePolicy(day_rates=rates(**ALL_ZERO)), "day_rates", "never opens", id="0s"),
    # Sunday 22:00-02:00 also gives nothing: its Monday part is cut off by Monday's rate 0.
    pytest.param(
        SchedulePolicy(
            windows=(window("08:00", "09:00", SUN), window("22:00", "02:00", SUN)),
            day_rates=rates(sun=0, mon=0),
        ),
        "windows",
        "never opens",
        id="windows-only-on-rate-0-days",
    ),
    pytest.param(
        SchedulePolicy(quiet_dates=tuple(date(2026, 1, 1) + timedelta(d) for d in range(500))),
        "quiet_dates",
        "no active day from 2026-01-01",
        id="every-day-quiet",
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


# --- the JSON form ----------------------------------------------------------------------------
SPEC_EXAMPLE = {
    "time_zone": "Asia/Shanghai",
    "windows": [{"start": "08:00", "end": "23:00", "days": ["mon", "tue", "wed", "thu", "fri"]}],
    "min_interval_hours": 2,
    "max_interval_hours": 6,
    "day_rates": {"sat": 2, "sun": 2},
    "quiet_dates": ["2026-12-25"],
}


def test_the_json_form_reads_every_field():
    assert parse_policy(SPEC_EXAMPLE) == SchedulePolicy(
        time_zone="Asia/Shanghai",
        windows=(window("08:00", "23:00", *WEEKDAYS),),
        min_interval_hours=2.0,
        max_interval_hours=6.0,
        day_rates=rates(sat=2, sun=2),
        quiet_dates=(CHRISTMAS,),
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, DEFAULT),
        ({"windows": []}, DEFAULT),
        ({"day_rates": {"SAT": 2}}, SchedulePolicy(day_rates=rates(sat=2))),
        ({"day_rates": {"sun": 3, "weekend": 2}}, SchedulePolicy(day_rates=rates(sat=2, sun=3))),
        (days(["weekdays", "sun"]), only("08:00", "09:00", *WEEKDAYS, SUN)),
        ({"windows": [{"start": "8:00", "end": "24:00"}]}, only("08:00", "00:00")),
        (
            {"windows": [{"start": "08:00:30", "end": "09:00", "days": ["sun", "sun"]}]},
            only("08:00:30", "09:00", SUN),
        ),
        (
            {"quiet_dates": ["2026-12-26", "2026-12-25", "2026-12-26"]},
            SchedulePolicy(quiet_dates=(CHRISTMAS, date(2026, 12, 26))),
        ),
    ],
)
def test_the_json_form_is_forgiving_where_meaning_is_clear(doc, expected):
    assert parse_policy(doc) == expected


@pytest.mark.parametrize(
    "doc", [SPEC_EXAMPLE, {}, {"windows": [{"start": "22:00", "end": "02:30:15", "days": ["fri"]}]}]
)
def test_the_json_form_round_trips(doc):
    p = parse_policy(doc)
    assert policy_to_dict(p) == doc
    assert parse_policy(policy_to_dict(p)) == p


BAD_DOCS = [
    ({"time_zone": "Mars/Base"}, "time_zone", "not a known IANA time zone"),
    ({"time_zone": 8}, "time_zone", "must be a zone name"),
    ({"windows": [{"start": "8am", "end": "09:00"}]}, "windows[0].start", "HH:MM"),
    ({"windows": [{"start": "25:00", "end": "09:00"}]}, "windows[0].start", "HH:MM"),
    ({"windows": [{"start": "24:00", "end": "09:00"}]}, "windows[0].start", "HH:MM"),
    ({"windows": [{"start": "08:00", "end": "08:60"}]}, "windows[0].end", "HH:MM"),
    ({"windows": [{"start": "08:00", "end": "٠٩:00"}]}, "windows[0].end", "HH:MM"),
    ({"windows": [{"start": "08:00"}]}, "windows[0].end", "is missing"),
    (days(["funday"]), "windows[0].days[0]", "not a day name"),
    (days("mon"), "windows[0].days", "list of day names"),
    (days([]), "windows[0].days", "is empty"),
    (
        {"windows": [{"start": "08:00", "end": "09:00", "colour": 1}]},
        "windows[0].colour",
        "not a window",
    ),
    ({"windows": ["08:00-09:00"]}, "windows[0]", "must be an object"),
    ({"windows": {"start": "08:00"}}, "windows", "must be a list"),
    ({"min_interval_hours": 7, "max_interval_hours": 6}, "min_interval_hours", "exceed"),
    ({"min_interval_hours": 0}, "min_interval_hours", "above 0"),
    ({"max_interval_hours": 9000}, "max_interval_hours", "at most 8760"),
    ({"max_interval_hours": "6"}, "max_interval_hours", "number of hours"),
    ({"max_interval_hours": True}, "max_interval_hours", "number of hours"),
    ({"day_rates": {"sat": -1}}, "day_rates.sat", "0 or more"),
    ({"day_rates": {"caturday": 2}}, "day_rates.caturday", "not a day name"),
    ({"day_rates": {"sat": "2"}}, "day_rates.sat", "a rate such as 2"),
    ({"day_rates": ALL_ZERO}, "day_rates", "never opens"),
    ({"day_rates": [2]}, "day_rates", "must be an object"),
    ({"quiet_dates": ["2026-02-30"]}, "quiet_dates[0]", "not a date YYYY-MM-DD"),
    ({"quiet_dates": ["25/12/2026"]}, "quiet_dates[0]", "not a date YYYY-MM-DD"),
    ({"quiet_dates": ["20261225"]}, "quiet_dates[0]", "not a date YYYY-MM-DD"),
    ({"quiet_dates": "2026-12-25"}, "quiet_dates", "must be a list"),
    ({"colour": "blue"}, "colour", "not a policy field"),
    ([{"start": "08:00"}], "policy", "must be a JSON object"),
]


@pytest.mark.parametrize(("doc", "field", "phrase"), BAD_DOCS)
def test_a_bad_field_gets_one_clear_sentence_naming_it(doc, field, phrase):
    with pytest.raises(PolicyError) as refused:
        parse_policy(doc)
    assert (refused.value.field, len(refused.value.problems)) == (field, 1)
    assert phrase in refused.value.problem
    assert str(refused.value) == f"{field}: {refused.value.problem}"
    assert "\n" not in str(refused.value)


def test_every_bad_field_is_named_at_once():
    doc = {
        "time_zone": "Nowhere",
        "windows": [{"start": "x", "end": "y"}],
        "day_rates": {"sun": -2},
    }
    with pytest.raises(PolicyError) as refused:
        parse_policy(doc)
    fields = [field for field, _ in refused.value.problems]
    assert sorted(fields) == ["day_rates.sun", "time_zone", "windows[0].end", "windows[0].start"]
    assert str(refused.value).count("; ") == 3


def test_validation_checks_a_one_sided_override_against_the_service_intervals():
    p = SchedulePolicy(min_interval_hours=8)
    validate_policy(p, "UTC")  # nothing to compare with
    with pytest.raises(
        PolicyError, match=r"^min_interval_hours: .*\(8 h\) exceed the maximum \(6 h\)"
    ):
        validate_policy(p, "UTC", default_min_h=2, default_max_h=6)
    assert interval_hours(p, 2, 6) == (8, 6)
    assert interval_hours(DEFAULT, 2, 6) == (2, 6)


def test_an_empty_zone_is_the_service_zone_which_must_be_known():
    validate_policy(DEFAULT, "Asia/Shanghai")
    validate_policy(SchedulePolicy(time_zone="UTC"), "Not/AZone")  # the policy's own is used
    with pytest.raises(PolicyError, match=r"^time_zone: is empty, so the service zone"):
        validate_policy(DEFAULT, "Not/AZone")
    assert policy_zone(DEFAULT, SHANGHAI) is SHANGHAI
    assert policy_zone(SchedulePolicy(time_zone="America/New_York"), SHANGHAI) == NEW_YORK
    with pytest.raises(PolicyError, match=r"^time_zone: 'Not/AZone' is not a known"):
        policy_zone(SchedulePolicy(time_zone="Not/AZone"), SHANGHAI)


# --- summary ----------------------------------------------------------------------------------
SUMMARIES = [
    (DEFAULT, "always active"),
    (
        SchedulePolicy(
            time_zone="Asia/Shanghai",
            windows=(window("08:00", "23:00"),),
            day_rates=rates(sat=2, sun=2),
        ),
        "Asia/Shanghai 08:00-23:00, Mon-Fri x1, Sat-Sun x2",
    ),
    (
        SchedulePolicy(
            time_zone="Europe/London",
            windows=(window("07:00", "09:00", *WEEKDAYS), window("10:00", "23:30", SAT, SUN)),
            min_interval_hours=1,
            max_interval_hours=3,
            quiet_dates=(CHRISTMAS,),
        ),
        "Europe/London 07:00-09:00 Mon-Fri + 10:00-23:30 Sat-Sun, every 1-3 h, quiet on 2026-12-25",
    ),
    (
        SchedulePolicy(
            windows=(window("22:00:30", "02:00", MON, WED, THU),), day_rates=rates(sun=0)
        ),
        "22:00:30-02:00 Mon,Wed-Thu, Mon-Sat x1, Sun x0",
    ),
    (
        SchedulePolicy(
            min_interval_hours=0.5, quiet_dates=(date(2026, 12, 31), NEW_YEAR, CHRISTMAS)
        ),
        "always active, every 0.5 h or more, 3 quiet dates 2026-12-25..2027-01-01",
    ),
    (
        SchedulePolicy(time_zone="UTC", max_interval_hours=12),
        "UTC always active, every 12 h or less",
    ),
]


@pytest.mark.parametrize(("p", "text"), SUMMARIES)
def test_the_summary_reads_as_one_line(p, text):
    assert summary(p) == text


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
