"""A slot already recorded as a success is never dispatched again, on real MariaDB, Redis
and the Action simulator.

Whatever leaves a row waiting for a slot its history records as a success (a
host whose clock was behind, a writer putting the time back), the pick-up
check must see it before Action is called, and the row must move on to a
new next time. Before, the slot reached Action again with the same key, was
found recorded, and was put back in ``due`` at the same past time, for ever.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from me2_devkit.simulators import RunningSimulator
from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.clock import epoch, from_epoch
from me2_scheduler.config import Config, ScheduleConf
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.policy import Failure, Success, idempotency_key
from me2_scheduler.states import Trigger
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore

from .fixtures_dispatch import calls_per_key, due_now

UTC = timezone.utc
LEASE_S = 600.0
ROUNDS = 5  # claim-and-dispatch rounds: the old loop called Action once per round


@pytest.fixture
def config(dispatch_config, action_simulator: RunningSimulator) -> Config:
    return dispatch_config(action_simulator.address, schedule=ScheduleConf(lease_seconds=LEASE_S))


@pytest.fixture
def dispatcher(config: Config, parts) -> Dispatcher:
    store, index, action = parts
    return Dispatcher(config, store, index, action, rng=random.Random(5))


def successes(store: MysqlStore, avatar_id: int, key: str) -> int:
    entries = store.history(avatar_id, 100)
    return sum(1 for h in entries if (h.idempotency_key, h.outcome) == (key, "success"))


def claim_due(index: DelayIndex) -> list[Claim]:
    index.claim_due(batch=50, lease_s=LEASE_S)
    return index.pop_ready_many(50, timeout_s=0).claims


PutBack = Callable[[int], tuple[datetime, str]]


@pytest.fixture
def put_back(dispatcher: Dispatcher, mariadb: MariaDBServer, database: str) -> PutBack:
    """Dispatches an avatar's slot (recorded as a success), then puts its row and its due
    score back at that slot's time: the state a skewed host left behind. Returns the
    slot's time and key."""

    def recorded_then_put_back(avatar_id: int) -> tuple[datetime, str]:
        store, index = dispatcher._store, dispatcher.index
        planned = due_now(store, index, avatar_id, ago_s=5)
        (claim,) = claim_due(index)
        (first,) = dispatcher.dispatch_batch([claim])
        assert first.result == "success"
        mariadb.query(
            database,
            "UPDATE avatar_schedules SET next_schedule_time = %s WHERE avatar_id = %s",
            (planned.replace(tzinfo=None), avatar_id),
        )
        index.put_due(avatar_id, epoch(planned))
        return planned, idempotency_key(avatar_id, planned)

    return recorded_then_put_back


def test_a_row_waiting_for_a_slot_recorded_as_a_success_moves_on_without_calling_action(
    dispatcher: Dispatcher, action_simulator: RunningSimulator, put_back: PutBack
) -> None:
    store, index = dispatcher._store, dispatcher.index
    planned, key = put_back(7)
    stuck = store.get(7)
    assert stuck.next_schedule_time == planned and calls_per_key(action_simulator) == {key: 1}

    outcomes = []
    for _ in range(ROUNDS):  # the old code claimed it again every round
        outcomes += [o.result for o in dispatcher.dispatch_batch(claim_due(index))]

    assert outcomes == ["skipped"]
    assert calls_per_key(action_simulator) == {key: 1}  # not once more
    assert successes(store, 7, key) == 1
    moved = store.get(7)
    assert moved.next_schedule_time > from_epoch(index.now())
    assert moved.next_schedule_time >= planned + timedelta(hours=2)  # a success's draw
    assert moved.schedule_count == stuck.schedule_count  # not counted again
    assert index.due_score(7) == epoch(moved.next_schedule_time) and not index.is_inflight(7)


def test_a_repeat_that_raced_past_the_pick_up_moves_the_row_on_when_recorded(
    dispatcher: Dispatcher, action_simulator: RunningSimulator, put_back: PutBack
) -> None:
    store, index = dispatcher._store, dispatcher.index
    _, key = put_back(8)
    (claim,) = claim_due(index)
    # As a worker whose pick-up read came before the first record: it calls Action.
    attempt = dispatcher._call_action(store.get(8), claim, Trigger.AUTO)
    assert attempt is not None

    (outcome,) = dispatcher._record_and_settle([(claim, attempt)])

    assert outcome.result == "skipped"
    assert calls_per_key(action_simulator) == {key: 2}  # at most once more
    assert successes(store, 8, key) == 1
    moved = store.get(8)
    assert moved.next_schedule_time == attempt.next_time.replace(microsecond=0)
    assert index.due_score(8) == epoch(moved.next_schedule_time)
    assert claim_due(index) == []  # nothing due: the loop is over


def repeat_of(store: MysqlStore, avatar_id: int, planned: datetime, **fields) -> Success | Failure:
    """A repeat of the avatar's slot at ``planned``: a success unless ``error`` is given."""
    row = store.get(avatar_id)
    now = datetime.now(UTC)
    common = {
        "avatar_id": avatar_id,
        "expected_version": row.version,
        "trigger": Trigger.AUTO,
        "planned_at": planned,
        "started_at": now,
        "finished_at": now,
        "idempotency_key": idempotency_key(avatar_id, planned),
    }
    if "error" in fields:
        return Failure(**common, max_consecutive_failures=5, **fields)
    return Success(**common, action_type="post", action_id=1, **fields)


def test_a_repeat_failure_moves_the_row_to_its_drawn_next_time_or_else_its_retry(
    dispatcher: Dispatcher, mariadb: MariaDBServer, database: str, put_back: PutBack
) -> None:
    store = dispatcher._store
    planned, _ = put_back(9)
    later = planned + timedelta(hours=3)
    retry = planned + timedelta(minutes=5)

    (drawn,) = store.record_many(
        [repeat_of(store, 9, planned, error="x", retry_time=retry, next_time=later)]
    )
    mariadb.query(
        database,
        "UPDATE avatar_schedules SET next_schedule_time = %s WHERE avatar_id = 9",
        (planned.replace(tzinfo=None),),
    )
    (fallback,) = store.record_many([repeat_of(store, 9, planned, error="x", retry_time=retry)])

    assert (drawn.duplicate, drawn.applied, drawn.row.next_schedule_time) == (True, True, later)
    assert (fallback.duplicate, fallback.row.next_schedule_time) == (True, retry)
    assert store.get(9).failed_count == 0  # a repeat counts nothing
    assert [h.outcome for h in store.history(9, 10)] == ["success"]


def test_a_repeat_of_a_slot_whose_row_moved_on_leaves_the_row_alone(
    dispatcher: Dispatcher,
) -> None:
    store, index = dispatcher._store, dispatcher.index
    planned = due_now(store, index, 10, ago_s=5)
    (first,) = dispatcher.dispatch_batch(claim_due(index))
    row = store.get(10)

    (again,) = store.record_many([repeat_of(store, 10, planned, next_time=planned)])

    assert (again.duplicate, again.applied) == (True, False)
    assert store.get(10) == row == again.row
    assert first.row.next_schedule_time == row.next_schedule_time
