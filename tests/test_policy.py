"""The pure scheduling policy: next time, retry, auto-pause and the DESIGN §4 state table."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from me2_scheduler import policy
from me2_scheduler.policy import CONFLICT, NOT_FOUND, OK, Call, Failure, Success, decide
from me2_scheduler.states import PauseReason, Status, Trigger

ACTIVE, PAUSED, DISABLED = "active", "paused", "disabled"

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
    assert decide(Call.PAUSE, ACTIVE).pause_reason == PauseReason.USER


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="unknown schedule status"):
        decide(Call.GET, "archived")


def test_the_idempotency_key_is_avatar_and_planned_epoch_milliseconds():
    planned = datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)
    assert policy.idempotency_key(42, planned) == f"42:{int(planned.timestamp()) * 1000}"


# -- what a dispatch writes (policy.after_dispatch) ---------------------------

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
NEXT = T0 + timedelta(hours=3)
RETRY = T0 + timedelta(minutes=5)


def row_state(status: str = ACTIVE, version: int = 4, failed_count: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        status=status, version=version, schedule_count=7, failed_count=failed_count
    )


def slot(version: int = 4) -> dict:
    return {
        "avatar_id": 42,
        "expected_version": version,
        "trigger": Trigger.AUTO,
        "planned_at": T0,
        "started_at": T0 + timedelta(seconds=1),
        "finished_at": T0 + timedelta(seconds=2),
        "idempotency_key": "42:1",
    }


def success(version: int = 4) -> Success:
    return Success(**slot(version), action_type="post", action_id=9, next_time=NEXT)


def failure(version: int = 4, limit: int = 3) -> Failure:
    return Failure(**slot(version), error="down", retry_time=RETRY, max_consecutive_failures=limit)


SUCCESS_COLUMNS = {
    "schedule_count": 8,
    "last_schedule_time": T0 + timedelta(seconds=1),
    "last_action_type": "post",
    "failed_count": 0,
    "last_error": None,
}
FAILURE_COLUMNS = {"last_failed_time": T0 + timedelta(seconds=2), "last_error": "down"}


@pytest.mark.parametrize("status", [ACTIVE, PAUSED])
def test_a_success_on_the_row_as_read_counts_and_moves_the_next_time(status):
    after = policy.after_dispatch(row_state(status, failed_count=2), success())

    assert after.changes == {**SUCCESS_COLUMNS, "next_schedule_time": NEXT}
    assert after.applied and not after.auto_paused


@pytest.mark.parametrize(("status", "version"), [(ACTIVE, 5), (PAUSED, 5), (DISABLED, 4)])
def test_a_success_on_a_row_moved_meanwhile_counts_but_keeps_its_next_time(status, version):
    after = policy.after_dispatch(row_state(status, version), success())

    assert after.changes == SUCCESS_COLUMNS
    assert not after.applied and not after.auto_paused


def test_a_failure_below_the_limit_counts_and_plans_the_retry():
    after = policy.after_dispatch(row_state(failed_count=1), failure(limit=3))

    assert after.changes == {**FAILURE_COLUMNS, "failed_count": 2, "next_schedule_time": RETRY}
    assert after.applied and not after.auto_paused


def test_the_failure_that_reaches_the_limit_pauses_and_keeps_the_slot():
    after = policy.after_dispatch(row_state(failed_count=2), failure(limit=3))

    assert after.changes == {
        **FAILURE_COLUMNS,
        "failed_count": 3,
        "status": Status.PAUSED,
        "pause_reason": PauseReason.FAILURES,
    }
    assert after.applied and after.auto_paused


@pytest.mark.parametrize(("status", "version"), [(PAUSED, 4), (ACTIVE, 5)])
def test_a_failure_on_a_paused_or_moved_row_only_counts(status, version):
    after = policy.after_dispatch(row_state(status, version, failed_count=2), failure(limit=3))

    assert after.changes == {**FAILURE_COLUMNS, "failed_count": 3}
    assert not after.applied and not after.auto_paused
