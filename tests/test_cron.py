"""The diary cron: robfig/cron v3's standard parser and SpecSchedule.Next, ported.

Expected fire times are worked out by hand from robfig's Go source (parser.go,
spec.go, constantdelay.go) and Go's time.Date rules, never by calling the code
under test.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from me2_scheduler import cron

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


NEXT_CASES = [
    # (expression, default zone, after, expected next fire time)
    ("0 22 * * *", "UTC", utc(2026, 1, 10, 12), utc(2026, 1, 10, 22)),
    ("0 22 * * *", "UTC", utc(2026, 1, 10, 22), utc(2026, 1, 11, 22)),
    ("0 22 * * *", "Asia/Shanghai", utc(2026, 1, 10), utc(2026, 1, 10, 14)),
    # */1 keeps robfig's star bit, so day-of-month AND Monday: the next Monday.
    ("0 0 */1 * 1", "UTC", utc(2026, 1, 5), utc(2026, 1, 12)),
    # */2 drops the star bit, so odd day OR Monday: Monday the 12th, then the 13th.
    ("0 0 */2 * 1", "UTC", utc(2026, 1, 11), utc(2026, 1, 12)),
    ("0 0 */2 * 1", "UTC", utc(2026, 1, 12), utc(2026, 1, 13)),
    ("0 5-5 * * *", "UTC", utc(2026, 1, 10, 6), utc(2026, 1, 11, 5)),
    ("0 ? * * *", "UTC", utc(2026, 1, 10, 6, 30), utc(2026, 1, 10, 7)),
    ("0 0 1/10 * *", "UTC", utc(2026, 1, 21), utc(2026, 1, 31)),  # a/n runs to the maximum
    ("0 0 29 2 *", "UTC", utc(2026, 1, 1), utc(2028, 2, 29)),
    ("0 9 * JAN,jul mon-FRI", "UTC", utc(2026, 1, 30, 9), utc(2026, 7, 1, 9)),
    ("15,45 */6 * * *", "UTC", utc(2026, 1, 10, 6, 45), utc(2026, 1, 10, 12, 15)),
    ("15,45 */6 * * *", "UTC", utc(2026, 1, 10, 23, 50), utc(2026, 1, 11, 0, 15)),
    ("*-5 * * * *", "UTC", utc(2026, 1, 10, 10, 0, 30), utc(2026, 1, 10, 10, 1)),  # robfig: "*"
    ("+5 * * * *", "UTC", utc(2026, 1, 10, 10), utc(2026, 1, 10, 10, 5)),  # Go's Atoi takes "+"
    ("@hourly", "UTC", utc(2026, 1, 10, 10, 59, 59), utc(2026, 1, 10, 11)),
    ("@daily", "UTC", utc(2026, 1, 10), utc(2026, 1, 11)),
    ("@midnight", "UTC", utc(2026, 1, 10, 0, 0, 1), utc(2026, 1, 11)),
    ("@weekly", "UTC", utc(2026, 1, 1, 12), utc(2026, 1, 4)),
    ("@monthly", "UTC", utc(2026, 1, 15), utc(2026, 2, 1)),
    ("@yearly", "UTC", utc(2026, 3, 1), utc(2027, 1, 1)),
    ("@annually", "UTC", utc(2026, 3, 1), utc(2027, 1, 1)),
    ("CRON_TZ=Asia/Shanghai 0 22 * * *", "UTC", utc(2026, 1, 10), utc(2026, 1, 10, 14)),
    ("TZ=UTC 0 0 1 1 *", "Asia/Shanghai", utc(2026, 6, 1), utc(2027, 1, 1)),
    ("TZ=Local 0 22 * * *", "Asia/Shanghai", utc(2026, 1, 10), utc(2026, 1, 10, 14)),
    ("@every 90m", "UTC", utc(2026, 1, 10, 6, 30, 15, 500000), utc(2026, 1, 10, 8, 0, 15)),
    ("@every 1h30m", "UTC", utc(2026, 1, 10, 6, 30, 15, 500000), utc(2026, 1, 10, 8, 0, 15)),
    ("@every 1.5h", "UTC", utc(2026, 1, 10, 6, 30, 15, 500000), utc(2026, 1, 10, 8, 0, 15)),
    ("@every 1m30.9s", "UTC", utc(2026, 1, 10, 6, 30, 15), utc(2026, 1, 10, 6, 31, 45)),
    ("@every 500ms", "UTC", utc(2026, 1, 10, 6, 30, 15, 500000), utc(2026, 1, 10, 6, 30, 16)),
    ("@every 0s", "UTC", utc(2026, 1, 10, 6, 30, 15), utc(2026, 1, 10, 6, 30, 16)),
    ("@every -5m", "UTC", utc(2026, 1, 10, 6, 30, 15), utc(2026, 1, 10, 6, 30, 16)),
]


@pytest.mark.parametrize(("expr", "zone", "after", "expected"), NEXT_CASES)
def test_next_fire_time_is_the_one_robfig_computes(expr, zone, after, expected):
    assert cron.parse(expr, zone).next(after) == expected


def test_next_is_given_in_the_schedule_zone():
    schedule = cron.parse("CRON_TZ=Asia/Shanghai 0 22 * * *", "UTC")
    fire = schedule.next(utc(2026, 1, 10))
    assert (fire.hour, fire.utcoffset()) == (22, timedelta(hours=8))
    assert schedule.expr == "CRON_TZ=Asia/Shanghai 0 22 * * *"
    assert schedule.tz == ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 , * *", "0 0 31 4 *"])
def test_an_expression_robfig_accepts_but_that_never_fires_has_no_next(expr):
    assert cron.parse(expr, "UTC").next(utc(2026, 1, 1)) is None


REJECTED = [
    ("", "empty"),
    ("0 0 0 * * *", "6 fields"),
    ("0 0 0 * * * *", "7 fields"),
    ("0 0 * *", "4 fields"),
    ("0 0 * * 7", "day-of-week value 7 is above the maximum 6"),
    ("0 0 L * *", "day-of-month item 'L'"),
    ("0 0 1W * *", "day-of-month item '1W'"),
    ("0 0 * * 1#2", "day-of-week item '1#2'"),
    ("5-1 * * * *", "minute range '5-1' starts after it ends"),
    ("60 * * * *", "minute value 60 is above the maximum 59"),
    ("0 24 * * *", "hour value 24 is above the maximum 23"),
    ("0 0 0 * *", "day-of-month value 0 is below the minimum 1"),
    ("0 0 * 13 *", "month value 13 is above the maximum 12"),
    ("*/0 * * * *", "step of 0"),
    ("*/-1 * * * *", "minute item '-1'"),
    ("0 0 * * mon/tue", "day-of-week item 'tue'"),  # names are not steps
    ("1-2-3 * * * *", "more than one hyphen"),
    ("1/2/3 * * * *", "more than one slash"),
    ("@fortnightly", "'@fortnightly' is not a known descriptor"),
    ("@DAILY", "not a known descriptor"),  # robfig matches descriptors case-sensitively
    ("@daily ", "not a known descriptor"),
    ("@every abc", "duration 'abc'"),
    ("@every 1", "duration '1'"),
    ("@every 1h 30m", "duration '1h 30m'"),
    ("TZ=Mars/Olympus 0 0 * * *", "time zone 'Mars/Olympus' is unknown"),
    ("CRON_TZ=UTC", "not followed by a space and a schedule"),
]


@pytest.mark.parametrize(("expr", "problem"), REJECTED)
def test_what_robfig_rejects_is_rejected_with_one_sentence_naming_the_problem(expr, problem):
    with pytest.raises(ValueError) as raised:
        cron.parse(expr, "UTC")
    message = str(raised.value)
    assert message.startswith(f"invalid cron expression {expr!r}: ")
    assert problem in message
    assert "\n" not in message


def test_an_unknown_default_zone_is_rejected():
    with pytest.raises(ValueError, match="time zone 'Nowhere/Land' is unknown"):
        cron.parse("0 22 * * *", "Nowhere/Land")


def test_a_naive_instant_is_refused():
    with pytest.raises(ValueError, match="no time zone"):
        cron.parse("0 22 * * *", "UTC").next(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("1h30m", 5400 * 10**9),
        ("1.5h", 5400 * 10**9),
        (".5s", 5 * 10**8),
        ("1.s", 10**9),
        ("-2s", -2 * 10**9),
        ("+3ms", 3 * 10**6),
        ("0", 0),
        ("1µs", 1000),
        ("1μs", 1000),
        ("1us1ns", 1001),
        ("9223372036854775807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
    ],
)
def test_go_durations_parse_as_time_parse_duration_does(text, nanoseconds):
    assert cron.go_duration_ns(text) == nanoseconds


@pytest.mark.parametrize("text", ["", "-", "1", ".s", "1d", "9223372036854775808ns", "1h-1m"])
def test_what_time_parse_duration_rejects_is_rejected(text):
    with pytest.raises(ValueError):
        cron.go_duration_ns(text)


# --- daylight saving: what Go's time package and robfig's Next do --------------------------


def fires(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """In UTC: Python never finds a time in a repeated hour == to one in another zone."""
    schedule = cron.parse(expr, zone)
    return [t.astimezone(UTC) for t in cron.fire_times_between(schedule, start, end)]


def test_a_time_in_the_spring_forward_gap_is_skipped_that_day():
    got = fires("30 2 * * *", "America/New_York", utc(2026, 3, 6, 12), utc(2026, 3, 10, 12))
    # 02:30 EST on the 7th, no 02:30 on the 8th (02:00 EST jumps to 03:00 EDT), then EDT.
    assert got == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_a_time_after_the_fall_back_hour_fires_once():
    got = fires("30 2 * * *", "America/New_York", utc(2026, 10, 30, 12), utc(2026, 11, 2, 12))
    assert got == [utc(2026, 10, 31, 6, 30), utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)]


def test_a_time_inside_the_repeated_fall_back_hour_fires_twice_as_in_go():
    got = fires("30 1 * * *", "America/New_York", utc(2026, 10, 30, 12), utc(2026, 11, 2, 12))
    # 01:30 EDT and again 01:30 EST on the 1st: robfig re-enters hour 1 after the fall-back.
    expected = [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)]
    assert got == [*expected, utc(2026, 11, 2, 6, 30)]


def test_a_missing_midnight_resolves_as_go_time_date_does():
    # Sao Paulo skipped 2018-11-04 00:00-00:59. Go's time.Date(.., 4, 0, 0, ..) gives 3rd 23:00
    # -03, which robfig moves one hour on to 4th 01:00 -02: the 4th is still found.
    schedule = cron.parse("0 1 4 11 *", "America/Sao_Paulo")
    assert schedule.next(datetime(2018, 11, 1, tzinfo=SAO_PAULO)) == utc(2018, 11, 4, 3)


def test_a_daily_midnight_that_does_not_exist_is_skipped():
    schedule = cron.parse("0 0 * * *", "America/Sao_Paulo")
    after = datetime(2018, 11, 3, 12, tzinfo=SAO_PAULO)
    assert schedule.next(after) == utc(2018, 11, 5, 2)  # 2018-11-05 00:00 -02


def test_a_day_the_zone_skips_does_not_hang_the_search():
    # Samoa skipped 2011-12-30 whole; robfig loops forever there. Sunday is 2012-01-01 +14.
    schedule = cron.parse("@weekly", "Pacific/Apia")
    assert schedule.next(utc(2011, 12, 27, 16, 36)) == utc(2011, 12, 31, 10)


# --- catch-up helpers ---------------------------------------------------------------------


def test_fire_times_between_excludes_the_start_and_includes_the_end():
    got = fires("15,45 */6 * * *", "UTC", utc(2026, 1, 10), utc(2026, 1, 10, 12, 15))
    hours_minutes = [(t.hour, t.minute) for t in got]
    assert hours_minutes == [(0, 15), (0, 45), (6, 15), (6, 45), (12, 15)]


# --- properties against a brute-force minute scan (UTC) ----------------------------------


@st.composite
def field_items(draw, lo: int, hi: int, names: tuple[str, ...] = ()):
    """One list item: (text, the values it stands for, whether robfig sets the star bit)."""
    kind = draw(st.sampled_from(["star", "step", "value", "name", "range", "range_step", "from"]))
    a, b = sorted(draw(st.lists(st.integers(lo, hi), min_size=2, max_size=2)))
    step = draw(st.integers(1, hi - lo + 1))
    if kind == "star":
        return draw(st.sampled_from(["*", "?"])), set(range(lo, hi + 1)), True
    if kind == "step":
        return f"*/{step}", set(range(lo, hi + 1, step)), step == 1
    if kind == "name" and names:
        index = draw(st.integers(0, len(names) - 1))
        return names[index].upper(), {index + lo}, False
    if kind == "range":
        return f"{a}-{b}", set(range(a, b + 1)), False
    if kind == "range_step":
        return f"{a}-{b}/{step}", set(range(a, b + 1, step)), False
    if kind == "from":
        return f"{a}/{step}", set(range(a, hi + 1, step)), False
    return str(a), {a}, False


@st.composite
def fields(draw, lo: int, hi: int, names: tuple[str, ...] = ()):
    items = draw(st.lists(field_items(lo, hi, names), min_size=1, max_size=3))
    values = set().union(*(item[1] for item in items))
    return ",".join(item[0] for item in items), values, any(item[2] for item in items)


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
specs = st.tuples(
    fields(0, 59), fields(0, 23), fields(1, 31), fields(1, 12, MONTHS), fields(0, 6, DAYS)
)
instants = st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC))


def matcher(spec):
    (_, minutes, _), (_, hours, _), (_, doms, dom_star), (_, months, _), (_, dows, dow_star) = spec

    def day_ok(t: datetime) -> bool:
        dom_ok, dow_ok = t.day in doms, t.isoweekday() % 7 in dows
        if dom_star or dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    return minutes, hours, months, day_ok


def first_match(spec, after: datetime, limit: datetime) -> datetime | None:
    """The first whole minute after ``after`` and before ``limit`` matching, by plain scanning."""
    minutes, hours, months, day_ok = matcher(spec)
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t < limit:
        if t.month not in months or not day_ok(t):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
        elif t.hour not in hours:
            t = t.replace(minute=0) + timedelta(hours=1)
        elif t.minute in minutes:
            return t
        else:
            t += timedelta(minutes=1)
    return None


@settings(max_examples=200, deadline=None)
@given(spec=specs, after=instants)
def test_next_is_the_first_matching_minute_after_the_instant(spec, after):
    schedule = cron.parse(" ".join(text for text, _, _ in spec), "UTC")
    got = schedule.next(after)
    if got is None:  # robfig gives up after the fifth year following the start year
        limit = datetime(after.year + 6, 1, 1, tzinfo=UTC)
        assert first_match(spec, after, limit) is None
    else:
        assert got > after
        assert first_match(spec, after, got + timedelta(minutes=1)) == got


@settings(max_examples=100, deadline=None)
@given(spec=specs, after=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)))
def test_in_a_dst_zone_next_is_later_and_its_wall_clock_matches(spec, after):
    after = after.replace(tzinfo=NEW_YORK)
    got = cron.parse(" ".join(text for text, _, _ in spec), "America/New_York").next(after)
    if got is not None:
        minutes, hours, months, day_ok = matcher(spec)
        assert got > after
        assert got.minute in minutes and got.hour in hours and got.month in months
        assert day_ok(got) and got.second == 0
