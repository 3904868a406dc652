"""The pure scheduling policy: next time, retry, auto-pause and the DESIGN §4 state table."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from me2_scheduler import policy
from me2_scheduler.policy import (
    ACTIVE,
    CONFLICT,
    DISABLED,
    NOT_FOUND,
    OK,
    PAUSED,
    PAUSED_BY_USER,
    Call,
    decide,
)

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)
hours = st.floats(min_value=0.001, max_value=48, allow_nan=False)


@given(now=instants, a=hours, b=hours, seed=st.integers())
def test_next_due_is_always_within_min_and_max_hours(now, a, b, seed):
    low, high = min(a, b), max(a, b)
    lo_s, hi_s = policy.interval_bounds_s(low, high)
    due = policy.next_due(now, low, high, random.Random(seed))
    offset = (due - policy.whole_second(now)).total_seconds()
    assert lo_s <= offset <= hi_s
    assert low * 3600 <= offset <= max(high * 3600, lo_s)
    assert due.microsecond == 0


def test_next_due_spreads_over_the_whole_interval():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rng = random.Random(7)
    offsets = {(policy.next_due(now, 2, 6, rng) - now).total_seconds() for _ in range(2000)}
    assert min(offsets) < 2.2 * 3600
    assert max(offsets) > 5.8 * 3600


def test_fractional_hours_give_seconds_long_intervals():
    now = datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=timezone.utc)
    due = policy.next_due(now, 20 / 3600, 60 / 3600, random.Random(1))
    assert timedelta(seconds=20) <= due - policy.whole_second(now) <= timedelta(seconds=60)


@given(now=instants, delay=st.floats(min_value=0.001, max_value=86400, allow_nan=False))
def test_retry_is_the_delay_later_rounded_up_to_a_second(now, delay):
    due = policy.retry_due(now, delay)
    gap = (due - policy.whole_second(now)).total_seconds()
    assert delay <= gap < delay + 1


@given(limit=st.integers(min_value=1, max_value=20))
def test_auto_pause_happens_exactly_at_the_nth_consecutive_failure(limit):
    count, pauses = 0, []
    for _ in range(limit + 2):
        outcome = policy.after_failure(count, limit)
        count = outcome.failed_count
        pauses.append(outcome.pause)
    assert pauses.index(True) == limit - 1
    assert not any(pauses[: limit - 1])


def test_a_success_resets_the_count_so_failures_start_over():
    outcome = policy.after_failure(4, 5)
    assert outcome.pause
    # A success (or a resume) stores failed_count = 0; four more failures do not pause.
    count = 0
    for _ in range(4):
        outcome = policy.after_failure(count, 5)
        count = outcome.failed_count
    assert count == 4 and not outcome.pause


EXPECTED_TABLE = {
    # (call, state): (code, new_status, reschedule, dispatch, create)
    (Call.ENABLE, None): (OK, ACTIVE, True, False, True),
    (Call.ENABLE, ACTIVE): (OK, None, False, False, False),
    (Call.ENABLE, PAUSED): (OK, ACTIVE, True, False, False),
    (Call.ENABLE, DISABLED): (OK, ACTIVE, True, False, False),
    (Call.PAUSE, None): (NOT_FOUND, None, False, False, False),
    (Call.PAUSE, ACTIVE): (OK, PAUSED, False, False, False),
    (Call.PAUSE, PAUSED): (OK, None, False, False, False),
    (Call.PAUSE, DISABLED): (CONFLICT, None, False, False, False),
    (Call.RESUME, None): (NOT_FOUND, None, False, False, False),
    (Call.RESUME, ACTIVE): (OK, None, False, False, False),
    (Call.RESUME, PAUSED): (OK, ACTIVE, True, False, False),
    (Call.RESUME, DISABLED): (CONFLICT, None, False, False, False),
    (Call.DISABLE, None): (NOT_FOUND, None, False, False, False),
    (Call.DISABLE, ACTIVE): (OK, DISABLED, False, False, False),
    (Call.DISABLE, PAUSED): (OK, DISABLED, False, False, False),
    (Call.DISABLE, DISABLED): (OK, None, False, False, False),
    (Call.TRIGGER, None): (NOT_FOUND, None, False, False, False),
    (Call.TRIGGER, ACTIVE): (OK, None, False, True, False),
    (Call.TRIGGER, PAUSED): (OK, None, False, True, False),
    (Call.TRIGGER, DISABLED): (CONFLICT, None, False, False, False),
    (Call.GET, None): (NOT_FOUND, None, False, False, False),
    (Call.GET, ACTIVE): (OK, None, False, False, False),
    (Call.GET, PAUSED): (OK, None, False, False, False),
    (Call.GET, DISABLED): (OK, None, False, False, False),
}


@pytest.mark.parametrize(("call", "state"), list(EXPECTED_TABLE))
def test_every_call_in_every_state_follows_the_design_table(call, state):
    code, new_status, reschedule, dispatch, create = EXPECTED_TABLE[(call, state)]
    decision = decide(call, state)
    assert (decision.code, decision.new_status, decision.reschedule) == (
        code,
        new_status,
        reschedule,
    )
    assert (decision.dispatch, decision.create) == (dispatch, create)
    if code != OK:
        assert decision.message and not decision.changes_row


def test_the_table_covers_every_call_and_state():
    assert len(EXPECTED_TABLE) == len(Call) * 4


def test_a_user_pause_records_the_user_as_the_reason():
    assert decide(Call.PAUSE, ACTIVE).pause_reason == PAUSED_BY_USER


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="unknown schedule status"):
        decide(Call.GET, "archived")


def test_the_idempotency_key_is_avatar_and_planned_epoch_milliseconds():
    planned = datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)
    assert policy.idempotency_key(42, planned) == f"42:{int(planned.timestamp()) * 1000}"
