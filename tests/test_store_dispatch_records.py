"""Dispatch records on a real MariaDB: a success or failure counts, reschedules, pauses and
writes history; history pages and is pruned."""

from __future__ import annotations

from datetime import timedelta

import pytest

from me2_scheduler.errors import StoreError
from me2_scheduler.states import Trigger
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow

from .fixtures_store import T0, failure, make, pause, success, success_while_paused

# -- recording dispatches ---------------------------------------------------------


def test_a_success_counts_the_dispatch_reschedules_and_writes_history(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    next_time = T0 + timedelta(hours=4)

    recorded = success(store, row, next_time)

    assert recorded.applied and not recorded.auto_paused
    new = recorded.row
    assert (new.schedule_count, new.failed_count, new.version) == (1, 0, 1)
    assert new.last_schedule_time == T0 + timedelta(seconds=2)  # whole seconds
    assert (new.last_action_type, new.next_schedule_time) == ("post", next_time)
    assert store.get(7) == new
    (entry,) = store.history(7, limit=10)
    recorded = (entry.trigger, entry.outcome, entry.action_type, entry.action_id)
    assert recorded == ("auto", "success", "post", 99)
    assert (entry.planned_time, entry.lag_ms, entry.idempotency_key) == (T0, 2500, "7:1")
    assert entry.finished_time == T0 + timedelta(seconds=3)


def test_a_success_after_a_pause_meanwhile_counts_but_does_not_reschedule(
    store: MysqlStore,
) -> None:
    recorded = success_while_paused(store, 7, T0 + timedelta(hours=4))

    assert not recorded.applied
    new = recorded.row
    assert (new.status, new.schedule_count, new.next_schedule_time) == ("paused", 1, T0)
    assert new.version == 2
    assert [entry.outcome for entry in store.history(7, limit=10)] == ["success"]


def test_a_failure_schedules_a_retry_and_keeps_the_error(store: MysqlStore) -> None:
    row = make(store, 7)
    retry = T0 + timedelta(minutes=5)

    recorded = failure(store, row, retry, error="x" * 600)

    assert recorded.applied and not recorded.auto_paused
    new = recorded.row
    assert (new.status, new.failed_count, new.next_schedule_time) == ("active", 1, retry)
    assert new.last_error == "x" * 512
    assert new.last_failed_time == T0 + timedelta(seconds=1)
    (entry,) = store.history(7, limit=10)
    assert (entry.outcome, entry.error, entry.lag_ms) == ("failure", "x" * 512, 0)


def test_the_nth_consecutive_failure_and_not_before_pauses_the_schedule(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    outcomes = []
    for attempt in range(1, 4):
        recorded = failure(store, row, T0 + timedelta(minutes=5 * attempt))
        row = recorded.row
        outcomes.append((recorded.auto_paused, row.status, row.failed_count, row.pause_reason))

    assert outcomes == [
        (False, "active", 1, None),
        (False, "active", 2, None),
        (True, "paused", 3, "failures"),
    ]
    assert row.next_schedule_time == T0 + timedelta(minutes=10)  # the pause keeps the slot
    assert store.auto_paused_count() == 1


def test_a_success_resets_the_consecutive_failures(store: MysqlStore) -> None:
    row = make(store, 7)
    for _ in range(2):
        row = failure(store, row, T0).row
    row = success(store, row, T0 + timedelta(hours=2)).row
    assert (row.failed_count, row.last_error) == (0, None)

    again = failure(store, row, T0 + timedelta(minutes=5))

    assert (again.row.failed_count, again.row.status, again.auto_paused) == (1, "active", False)


def test_a_failure_on_a_paused_schedule_counts_but_neither_retries_nor_auto_pauses(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    paused = pause(store, 7)

    recorded = failure(store, paused, T0 + timedelta(minutes=5), max_consecutive_failures=1)

    assert not recorded.applied and not recorded.auto_paused
    new = recorded.row
    assert (new.status, new.pause_reason, new.failed_count) == ("paused", "user", 1)
    assert new.next_schedule_time == row.next_schedule_time


def test_recording_for_an_avatar_without_a_schedule_raises_store_error(
    store: MysqlStore,
) -> None:
    ghost = ScheduleRow(404, "active", T0, None, None, 0, 0, None, None, None, None, None, 0, 0)

    with pytest.raises(StoreError, match="avatar 404 has no schedule row"):
        success(store, ghost, T0)
    assert store.history(404, limit=10) == []


# -- history ---------------------------------------------------------------------


def test_history_pages_newest_first_by_entry_id(store: MysqlStore) -> None:
    rows = {avatar_id: make(store, avatar_id) for avatar_id in (7, 8)}
    for minute in range(7):
        started = T0 + timedelta(minutes=minute)
        manual = {"trigger": Trigger.MANUAL, "planned_at": None}
        failure(store, rows[7], T0, started_at=started, finished_at=started, **manual)
        failure(store, rows[8], T0, started_at=started, finished_at=started)

    first = store.history(7, limit=3)
    second = store.history(7, limit=3, before_id=first[-1].id)
    last = store.history(7, limit=3, before_id=second[-1].id)

    pages = [[entry.started_time.minute for entry in page] for page in (first, second, last)]
    assert pages == [[6, 5, 4], [3, 2, 1], [0]]
    assert {entry.avatar_id for entry in first + second + last} == {7}
    assert first[0].lag_ms is None and first[0].planned_time is None


def test_prune_history_deletes_old_entries_in_batches_and_keeps_the_rest(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    for day in range(14):
        started = T0 - timedelta(days=day)
        failure(store, row, T0, planned_at=started, started_at=started, finished_at=started)
    cutoff = T0 - timedelta(days=3, hours=12)

    deleted = store.prune_history(cutoff, batch=3)

    assert deleted == 10
    remaining = sorted(entry.started_time for entry in store.history(7, limit=100))
    assert remaining == [T0 - timedelta(days=day) for day in (3, 2, 1, 0)]
    assert store.prune_history(cutoff, batch=3) == 0
