"""Scheduling policies, properties: draws land in windows, use up their active time, and
reduce to today's rule; DST gaps and folds, rates and quiet dates; the JSON form.

The reference here is deliberately naive: ``weight`` reads one instant's wall
clock against the windows as written, and ``active_seconds`` adds it up minute
by minute (every edge and offset in these zones is a whole minute).
"""

from __future__ import annotations

import json
import math
import random
from datetime import date, datetime, time, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from me2_scheduler import active_time, policy
from me2_scheduler.schedule_policy import (
    ALL_DAYS,
    DEFAULT,
    PolicyError,
    PolicyNeverActive,
    SchedulePolicy,
    Window,
    in_window,
    next_active_due,
    parse_policy,
    policy_to_dict,
    summary,
    validate_policy,
)
from me2_scheduler.schedule_policy_model import policy_problems

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = 86400
DST_ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago")
ZONES = ("UTC", "Asia/Shanghai", *DST_ZONES)
# Each zone's 2026 changes (UTC): a gap in spring, a fold in autumn.
CHANGES = (
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York: 02:00 EST -> 03:00 EDT
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York: 02:00 EDT -> 01:00 EST
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # London: 01:00 GMT -> 02:00 BST
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # London: 02:00 BST -> 01:00 GMT
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe: 02:00 -> 02:30 (+10:30 -> +11)
    datetime(2026, 4, 4, 15, tzinfo=UTC),  # Lord Howe: 02:00 -> 01:30 (+11 -> +10:30)
    datetime(2026, 4, 5, 3, tzinfo=UTC),  # Santiago: 24:00 -> 23:00 (-03 -> -04)
    datetime(2026, 9, 6, 4, tzinfo=UTC),  # Santiago: 24:00 -> 01:00 (-04 -> -03)
)
# Wall times in or at the edges of those gaps and folds.
DST_EDGES = [time(h, m) for h in (23, 0, 1, 2, 3) for m in (0, 15, 30, 45)]


# --- the reference ----------------------------------------------------------------------------
def seconds_of(moment: time) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def weight(moment: datetime, p: SchedulePolicy, zone: ZoneInfo) -> float:
    """What one second at ``moment`` counts for: its day's rate inside a window, else 0."""
    local = moment.astimezone(zone)
    day, clock = local.date(), seconds_of(local.time())
    if day in p.quiet_dates:
        return 0.0
    rate = p.day_rates[day.weekday()]
    if not p.windows:
        return rate
    for w in p.windows:
        start = seconds_of(w.start)
        length = (seconds_of(w.end) - start) % DAY or DAY
        if day.weekday() in w.days and start <= clock < start + length:
            return rate
        if (day.weekday() - 1) % 7 in w.days and clock < start + length - DAY:
            return rate  # the part after midnight of yesterday's window
    return 0.0


def active_seconds(p: SchedulePolicy, zone: ZoneInfo, start: int, end: int) -> float:
    """Weighted active seconds in [start, end) (epoch seconds), a UTC minute at a time."""
    total, second = 0.0, start
    while second < end:
        step = min(60 - second % 60, end - second)
        total += weight(EPOCH + timedelta(seconds=second), p, zone) * step
        second += step
    return total


def epoch(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(seconds=1)


class RecordingRandom(random.Random):
    """A seeded random source that remembers what randint gave."""

    drawn: list[int]

    def randint(self, a: int, b: int) -> int:
        self.__dict__.setdefault("drawn", []).append(super().randint(a, b))
        return self.drawn[-1]


# --- strategies -------------------------------------------------------------------------------
clock_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59]))
weekday_sets = st.one_of(st.just(ALL_DAYS), st.frozensets(st.integers(0, 6), min_size=1))
rates = st.tuples(*[st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0])] * 7)
quiet = st.lists(st.dates(date(2026, 1, 1), date(2026, 12, 31)), max_size=6).map(tuple)


@st.composite
def windows(draw: st.DrawFn, starts: st.SearchStrategy[time] = clock_times) -> Window:
    """A window of 15 minutes to a whole day, from a start that may sit in a DST change."""
    start = draw(starts)
    minutes = draw(st.integers(15, 24 * 60))
    end_minute = (start.hour * 60 + start.minute + minutes) % (24 * 60)
    return Window(start, time(end_minute // 60, end_minute % 60), draw(weekday_sets))


@st.composite
def valid_policies(draw: st.DrawFn, starts: st.SearchStrategy[time] = clock_times):
    p = SchedulePolicy(
        windows=tuple(draw(st.lists(windows(starts), max_size=4))),
        day_rates=draw(rates),
        quiet_dates=draw(quiet),
    )
    assume(not policy_problems(p))
    return p


instants = st.datetimes(datetime(2025, 6, 1), datetime(2027, 6, 1), timezones=st.just(UTC))
near_changes = st.builds(
    lambda change, offset, micro: change + timedelta(seconds=offset, microseconds=micro),
    st.sampled_from(CHANGES),
    st.integers(-36 * 3600, 12 * 3600),
    st.integers(0, 999_999),
)
nows = st.one_of(instants, near_changes)
low_hours = st.floats(0.005, 0.75)
spans = st.floats(0, 0.75)
short_hours = st.floats(0.005, 0.25)  # DST cases: enough to cross a change, cheap to check


# --- every draw lands in a window, having used up its active time ------------------------------
def check_draw(
    p: SchedulePolicy, zone: ZoneInfo, now: datetime, low: float, high: float, seed: int
):
    """Draw once and check everything a next time promises; return it."""
    rng = RecordingRandom(seed)
    due = next_active_due(now, p, zone=zone, min_h=low, max_h=high, rng=rng)
    assert due.tzinfo is UTC and due.microsecond == 0
    assert due >= now.replace(microsecond=0)
    assert in_window(due, p, zone) and weight(due, p, zone) > 0
    used = active_seconds(p, zone, epoch(now), epoch(due))
    # Exactly the draw, up to the last second (which weighs its rate) and float noise.
    assert rng.drawn[0] - 1e-6 <= used < rng.drawn[0] + max(p.day_rates) + 1e-6
    assert used >= low * 3600 - 1e-6
    return due


@given(valid_policies(), st.sampled_from(ZONES), nows, low_hours, spans, st.integers())
@settings(max_examples=200, deadline=None)
def test_every_next_time_is_in_a_window_after_its_interval_of_active_time(
    p, zone_name, now, low, span, seed
):
    check_draw(p, ZoneInfo(zone_name), now, low, low + span, seed)


@given(
    valid_policies(starts=st.sampled_from(DST_EDGES)),
    st.sampled_from(DST_ZONES),
    near_changes,
    short_hours,
    short_hours,
    st.integers(),
    st.integers(0, 6 * 3600),
)
@settings(max_examples=200, deadline=None)
def test_window_edges_in_dst_gaps_and_folds_give_monotonic_draws_inside_windows(
    p, zone_name, now, low, span, seed, later
):
    zone = ZoneInfo(zone_name)
    first = check_draw(p, zone, now, low, low + span, seed)
    second = check_draw(p, zone, now + timedelta(seconds=later), low, low + span, seed)
    assert first <= second  # the same draw from a later moment never ends earlier


@given(
    st.sampled_from(ZONES),
    st.sampled_from(CHANGES),
    st.integers(-2 * DAY, 2 * DAY),
    st.integers(1, 3 * DAY),
)
def test_the_walk_through_a_calendar_always_open_is_elapsed_time(zone_name, change, offset, need):
    # The walk itself, not the shortcut next_active_due takes for such a policy.
    calendar = active_time.week_calendar([], [1.0] * 7)
    start = epoch(change) + offset
    assert active_time.walk(calendar, ZoneInfo(zone_name), start, need) == start + need


# --- today's rule -----------------------------------------------------------------------------
ALL_DAY_POLICIES = st.one_of(
    st.just(DEFAULT),
    st.builds(lambda t: SchedulePolicy(windows=(Window(t, t),)), clock_times),
    st.builds(
        lambda z: SchedulePolicy(time_zone=z, windows=(Window(time(0), time(0)),)),
        st.sampled_from(ZONES),
    ),
)
any_instant = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
hours = st.floats(min_value=0.001, max_value=48, allow_nan=False)


@given(ALL_DAY_POLICIES, st.sampled_from(ZONES), any_instant, hours, hours, st.integers())
def test_an_always_open_policy_draws_exactly_what_next_due_draws(p, zone_name, now, a, b, seed):
    low, high = min(a, b), max(a, b)
    reference, rng = random.Random(seed), random.Random(seed)
    expected = policy.next_due(now, low, high, reference)
    due = next_active_due(now, p, zone=ZoneInfo(zone_name), min_h=low, max_h=high, rng=rng)
    assert due == expected
    assert rng.getstate() == reference.getstate()


@given(st.sampled_from(DST_ZONES), nows, st.sampled_from([0.5, 2.0, 3.0]), st.integers())
def test_a_uniform_rate_divides_the_elapsed_time(zone_name, now, rate, seed):
    p = SchedulePolicy(day_rates=(rate,) * 7)
    rng = RecordingRandom(seed)
    due = next_active_due(now, p, zone=ZoneInfo(zone_name), min_h=2, max_h=6, rng=rng)
    assert epoch(due) == epoch(now) + math.ceil(rng.drawn[0] / rate)


# --- distributions, by simulation (seeded) ----------------------------------------------------
def simulate(p: SchedulePolicy, zone: ZoneInfo, start: datetime, draws: int, seed: int):
    """Successive next times from ``start``, each drawn at the previous one (2-6 h)."""
    rng, times = random.Random(seed), [start]
    for _ in range(draws):
        times.append(next_active_due(times[-1], p, zone=zone, min_h=2, max_h=6, rng=rng))
    return times


def test_the_mean_interval_in_active_time_is_the_middle_of_min_and_max():
    zone = ZoneInfo("Europe/London")  # through both 2026 changes
    p = SchedulePolicy(
        windows=(
            Window(time(7), time(9), frozenset(range(5))),
            Window(time(10), time(1)),  # crosses midnight
        ),
        day_rates=(1, 1, 1, 1, 1, 2, 0.5),
        quiet_dates=(date(2026, 5, 1), date(2026, 12, 25)),
    )
    times = simulate(p, zone, datetime(2026, 3, 1, tzinfo=UTC), 1000, seed=15)
    intervals = [active_seconds(p, zone, epoch(a), epoch(b)) for a, b in pairwise(times)]
    # Uniform over [2, 6] h: mean 4 h, standard error 1.15 h / sqrt(1000) = 0.037 h.
    assert abs(sum(intervals) / len(intervals) / 3600 - 4) < 0.15
    assert min(intervals) >= 2 * 3600 and max(intervals) < 6 * 3600 + 3


def test_days_of_rate_2_get_twice_the_dispatches_per_active_hour():
    zone = ZoneInfo("America/New_York")
    p = SchedulePolicy(windows=(Window(time(8), time(22)),), day_rates=(1,) * 5 + (2, 2))
    times = simulate(p, zone, datetime(2026, 1, 1, 5, tzinfo=UTC), 4000, seed=2)
    first, last = times[0].astimezone(zone).date(), times[-1].astimezone(zone).date()
    days = [first + timedelta(d) for d in range(1, (last - first).days)]  # whole days only
    weekend = {d for d in days if d.weekday() >= 5}
    counted = [t.astimezone(zone).date() for t in times]
    per_hour = {
        is_weekend: sum(1 for d in counted if d in days and (d in weekend) == is_weekend)
        / (14 * sum(1 for d in days if (d in weekend) == is_weekend))
        for is_weekend in (False, True)
    }
    assert 1.85 < per_hour[True] / per_hour[False] < 2.15


def test_no_dispatch_falls_on_a_quiet_date():
    zone = ZoneInfo("Australia/Lord_Howe")
    holidays = tuple(date(2026, 9, 20) + timedelta(d) for d in range(0, 40, 3))
    p = SchedulePolicy(windows=(Window(time(22), time(3)),), quiet_dates=holidays)
    times = simulate(p, zone, datetime(2026, 9, 15, tzinfo=UTC), 300, seed=7)
    assert times[-1].astimezone(zone).date() > holidays[-1]
    assert not {t.astimezone(zone).date() for t in times[1:]} & set(holidays)


# --- membership and never-opening -------------------------------------------------------------
@given(valid_policies(starts=st.sampled_from(DST_EDGES)), st.sampled_from(ZONES), nows)
def test_in_window_agrees_with_the_wall_clock_reading_of_the_windows(p, zone_name, moment):
    zone = ZoneInfo(zone_name)
    assert in_window(moment, p, zone) is (weight(moment, p, zone) > 0)


@st.composite
def closed_policies(draw: st.DrawFn) -> SchedulePolicy:
    """Windows only on days of rate 0 (within the day: nothing spills onto an open day)."""
    closed = draw(st.frozensets(st.integers(0, 6), min_size=1))
    day_rates = tuple(
        0.0 if d in closed else draw(st.sampled_from([0.5, 1.0, 2.0])) for d in range(7)
    )
    shut = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, 22 * 60))
        end = draw(st.integers(start + 1, 24 * 60 - 1))
        days = draw(st.frozensets(st.sampled_from(sorted(closed)), min_size=1))
        shut.append(Window(time(start // 60, start % 60), time(end // 60, end % 60), days))
    return SchedulePolicy(windows=tuple(shut), day_rates=day_rates)


@given(closed_policies(), st.sampled_from(ZONES), nows, st.integers())
def test_a_policy_that_never_opens_is_refused_and_its_draw_gives_up_at_once(
    p, zone_name, now, seed
):
    try:
        validate_policy(p, "UTC")
        raise AssertionError("a policy that never opens was accepted")
    except PolicyError as e:
        assert e.field in ("windows", "day_rates") and "never opens" in e.problem
    try:
        next_active_due(now, p, zone=ZoneInfo(zone_name), min_h=2, max_h=6, rng=random.Random(seed))
        raise AssertionError("a draw found active time in a policy that never opens")
    except PolicyNeverActive:
        pass


# --- the JSON form ----------------------------------------------------------------------------
second_times = st.builds(time, st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
interval_pairs = st.one_of(
    st.tuples(st.none(), st.none()),
    st.tuples(st.floats(0.01, 100), st.none()),
    st.tuples(st.none(), st.floats(0.01, 100)),
    st.tuples(st.floats(0.01, 10), st.floats(10, 100)),
)


@st.composite
def any_valid_policy(draw: st.DrawFn) -> SchedulePolicy:
    low, high = draw(interval_pairs)
    p = SchedulePolicy(
        time_zone=draw(st.sampled_from(("", *ZONES))),
        windows=tuple(
            draw(st.lists(st.builds(Window, second_times, second_times, weekday_sets), max_size=4))
        ),
        min_interval_hours=low,
        max_interval_hours=high,
        day_rates=draw(st.tuples(*[st.sampled_from([0.0, 0.25, 1.0, 1.5, 2.0, 7.0])] * 7)),
        quiet_dates=draw(quiet),
    )
    assume(not policy_problems(p))
    return p


@given(any_valid_policy())
def test_the_json_form_round_trips(p):
    doc = policy_to_dict(p)
    assert parse_policy(doc) == p
    assert parse_policy(json.loads(json.dumps(doc))) == p
    assert "\n" not in summary(p)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = (
    "time_zone",
    "windows",
    "min_interval_hours",
    "max_interval_hours",
    "day_rates",
    "quiet_dates",
)
window_docs = st.dictionaries(
    st.sampled_from(("start", "end", "days")),
    json_values | st.sampled_from(["08:00", "24:00", ["sat"]]),
)
policy_docs = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values),
    st.fixed_dictionaries({"windows": st.lists(window_docs, max_size=3)}),
)


@given(policy_docs)
def test_any_json_gives_a_policy_or_a_policy_error_never_a_traceback(doc):
    try:
        p = parse_policy(doc)
    except PolicyError as e:
        assert e.problems and all(field and problem for field, problem in e.problems)
        assert len(str(e).splitlines()) == 1
        return
    validate_policy(p, "UTC")
    assert parse_policy(policy_to_dict(p)) == p
