"""Regressions for the bugs the chaos suite and the fuzzers found, each on real servers.

1. A trigger in the same second as an auto dispatch (or as another trigger)
   reused its idempotency key, so Action dropped it as a repeat while the
   scheduler counted it as a success.
2. A worker starved of CPU between pick-up and its Action call outlived its
   lease; another worker took the slot, and both dispatched and recorded it.
3. A slot recorded twice (two workers, one lease) counted twice in
   ``schedule_count`` and history.
4. A config error could span several lines (a YAML reader error, a value
   with a newline), breaking the one-line ``config error:`` contract.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from me2_devkit.simulators import RunningSimulator
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clock import epoch
from me2_scheduler.config import Config, load_config
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.errors import ConfigError
from me2_scheduler.policy import Failure, Success
from me2_scheduler.states import Trigger
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore, Recorded

UTC = timezone.utc
LONG_LEASE = 600.0


@pytest.fixture
def config(dispatch_config, action_simulator: RunningSimulator) -> Config:
    return dispatch_config(action_simulator.address)


@pytest.fixture
def dispatcher(config: Config) -> Iterator[Dispatcher]:
    store, index = MysqlStore(config.mysql), DelayIndex(config.redis)
    action = ActionClient(config.action_rpc)
    yield Dispatcher(config, store, index, action, rng=random.Random(2))
    for part in (action, index, store):
        part.close()


# -- 1. trigger keys ------------------------------------------------------------


def test_a_trigger_is_never_planned_on_a_whole_second_so_its_key_is_no_auto_slots_key(
    index: DelayIndex,
) -> None:
    for avatar_id in range(1, 30):
        claim = index.claim_one(avatar_id, LONG_LEASE)
        assert claim is not None
        assert int(claim.idempotency_key.split(":")[1]) % 1000 != 0, claim


def test_two_triggers_in_a_row_reach_action_under_two_keys(
    dispatcher: Dispatcher, action_simulator: RunningSimulator
) -> None:
    due_now(dispatcher, 5)
    for _ in range(2):  # as TriggerSchedule does: claim now, dispatch, settle
        claim = dispatcher.index.claim_one(5, LONG_LEASE)
        assert claim is not None
        outcome = dispatcher.dispatch(dispatcher._store.get(5), claim, Trigger.MANUAL)
        assert outcome.result == "success"

    keys = action_simulator.servicer.Stats(None, None).calls_per_key
    assert len(keys) == 2 and set(keys.values()) == {1}, keys
    assert dispatcher._store.get(5).schedule_count == 2


def test_a_trigger_cut_by_a_crash_is_redone_under_its_own_key(index: DelayIndex) -> None:
    cut = index.claim_one(6, lease_s=0)
    assert cut is not None and index.release_expired() == [6]

    assert index.claim_due(batch=10, lease_s=LONG_LEASE) == 1
    (redone,) = index.pop_ready_many(1, timeout_s=0).claims

    assert redone.idempotency_key == cut.idempotency_key


# -- 2. a worker that outlived its lease ----------------------------------------


def due_now(dispatcher: Dispatcher, avatar_id: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    assert dispatcher._store.create(avatar_id, now) is not None
    dispatcher.index.put_due(avatar_id, epoch(now))


def test_a_worker_whose_lease_ran_out_after_pick_up_does_not_call_action(
    dispatcher: Dispatcher, action_simulator: RunningSimulator
) -> None:
    index = dispatcher.index
    due_now(dispatcher, 7)
    assert index.claim_due(batch=10, lease_s=LONG_LEASE) == 1
    (starved,) = index.pop_ready_many(1, timeout_s=0).claims
    assert index.renew_leases([starved], lease_s=0) == [True]  # its lease is over at once
    assert index.release_expired() == [7]
    assert index.claim_due(batch=10, lease_s=LONG_LEASE) == 1
    (taker,) = index.pop_ready_many(1, timeout_s=0).claims
    assert taker.idempotency_key == starved.idempotency_key

    (late,) = dispatcher.dispatch_batch([starved])
    (on_time,) = dispatcher.dispatch_batch([taker])

    assert (late.result, on_time.result) == ("skipped", "success")
    assert action_simulator.servicer.Stats(None, None).calls_per_key == {taker.idempotency_key: 1}
    assert dispatcher._store.get(7).schedule_count == 1


# -- 3. a slot recorded twice ---------------------------------------------------


def record(store: MysqlStore, avatar_id: int, key: str, *, failed: bool = False) -> Recorded:
    row = store.get(avatar_id)
    assert row is not None
    now = datetime.now(UTC)
    slot = {"avatar_id": avatar_id, "expected_version": row.version, "trigger": Trigger.AUTO}
    times = {"planned_at": now, "started_at": now, "finished_at": now, "idempotency_key": key}
    if failed:
        failure = Failure(**slot, **times, error="boom", retry_time=now, max_consecutive_failures=5)
        (recorded,) = store.record_many([failure])
    else:
        next_time = now + timedelta(hours=1)
        success = Success(**slot, **times, action_type="post", action_id=1, next_time=next_time)
        (recorded,) = store.record_many([success])
    return recorded


def history_keys(store: MysqlStore, avatar_id: int) -> list[tuple[str, str]]:
    return [(h.idempotency_key, h.outcome) for h in store.history(avatar_id, 100)]


def test_a_slot_already_recorded_as_a_success_is_not_counted_again(
    dispatcher: Dispatcher,
) -> None:
    store = dispatcher._store
    due_now(dispatcher, 8)

    first = record(store, 8, "8:1000")
    again = record(store, 8, "8:1000")
    late_failure = record(store, 8, "8:1000", failed=True)

    assert not first.duplicate and again.duplicate and late_failure.duplicate
    row = store.get(8)
    assert (row.schedule_count, row.failed_count) == (1, 0)
    assert history_keys(store, 8) == [("8:1000", "success")]


def test_a_failed_attempt_does_not_stop_the_slots_success_being_recorded(
    dispatcher: Dispatcher,
) -> None:
    store = dispatcher._store
    due_now(dispatcher, 9)

    record(store, 9, "9:2000", failed=True)
    success = record(store, 9, "9:2000")

    assert not success.duplicate
    assert history_keys(store, 9) == [("9:2000", "success"), ("9:2000", "failure")]


# -- 4. one-line config errors --------------------------------------------------


def test_a_config_error_is_one_line_whatever_it_quotes() -> None:
    error = ConfigError("Name", "bad value 'a\nb\u2028c'\n  in line 3")
    assert str(error) == "Name: bad value 'a b c' in line 3"


def test_a_nul_byte_in_the_config_is_a_one_line_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_text("\x00Name: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert len(str(caught.value).splitlines()) == 1
    assert "invalid YAML" in str(caught.value)
