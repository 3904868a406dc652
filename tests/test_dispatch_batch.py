"""A worker's batch of claims, on real MariaDB, Redis and the Action simulator.

A batch reads its rows in one query, renews its leases in one script call,
calls Action for each claim in turn, records every outcome in one MySQL
transaction and settles them in one script call. These tests hold a batch
to what a lone dispatch guarantees, and check what only a batch can do:
hand back its untried claims (a stop, a slow Action), and renew its leases
when its calls run long.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from me2_devkit.simulators import RunningSimulator
from me2_scheduler.clients.action import ActionClient, ActionResult
from me2_scheduler.clock import epoch
from me2_scheduler.config import Config, ScheduleConf
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.policy import Attempt, Failure, Success
from me2_scheduler.states import Status, Trigger
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import Confirmed, DelayIndex
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.storage.recording import RECENT_HISTORY

from .fixtures_dispatch import calls_per_key, claim_all, due_now

UTC = timezone.utc
LEASE_S = 600.0


@pytest.fixture
def config(dispatch_config, failing_simulator: RunningSimulator) -> Config:
    return dispatch_config(failing_simulator.address, schedule=ScheduleConf(lease_seconds=LEASE_S))


def move_active(store: MysqlStore, avatar_id: int, next_time: datetime) -> None:
    """Moves an active row to another next time, as a reactivation would."""
    row = store.get(avatar_id)
    store.transition(
        avatar_id,
        expected_status="active",
        expected_version=row.version,
        new_status="active",
        next_time=next_time,
    )


def dispatcher_of(config: Config, parts, **kwargs) -> Dispatcher:
    store, index, action = parts
    return Dispatcher(config, store, index, action, rng=random.Random(3), **kwargs)


def test_a_batch_dispatches_each_claim_once_and_records_and_settles_all(
    config: Config, parts, failing_simulator: RunningSimulator
) -> None:
    store, index, _ = parts
    avatars = list(range(101, 121))
    due_now(store, index, *avatars)
    claims = claim_all(index, len(avatars), LEASE_S)

    outcomes = dispatcher_of(config, parts).dispatch_batch(claims)

    assert sorted(o.avatar_id for o in outcomes) == avatars
    assert {o.result for o in outcomes} == {"success"}
    assert calls_per_key(failing_simulator) == {c.idempotency_key: 1 for c in claims}
    for claim in claims:
        row = store.get(claim.avatar_id)
        assert (row.schedule_count, row.version) == (1, 1)
        assert row.next_schedule_time > datetime.now(UTC) + timedelta(hours=1.9)
        assert index.due_score(claim.avatar_id) == epoch(row.next_schedule_time)
        assert not index.is_inflight(claim.avatar_id)
        (entry,) = store.history(claim.avatar_id, 10)
        assert (entry.outcome, entry.idempotency_key) == ("success", claim.idempotency_key)
    assert index.sizes()["inflight"] == 0


def test_a_mixed_batch_gets_each_claim_the_outcome_a_lone_dispatch_would(
    config: Config, parts, failing_simulator: RunningSimulator
) -> None:
    store, index, _ = parts
    due = due_now(store, index, 11, 12, 13, 14)
    claims = {c.avatar_id: c for c in claim_all(index, 4, LEASE_S)}
    # 12 moved past its slot meanwhile (say a reactivation); 14 was paused.
    moved = due + timedelta(hours=1)
    move_active(store, 12, moved)
    row14 = store.get(14)
    store.transition(
        14, expected_status="active", expected_version=row14.version, new_status="paused"
    )
    index.remove(14)

    outcomes = {
        o.avatar_id: o for o in dispatcher_of(config, parts).dispatch_batch(list(claims.values()))
    }

    as_alone = {11: "success", 12: "skipped", 13: "failure", 14: "skipped"}
    assert {a: o.result for a, o in outcomes.items()} == as_alone
    assert set(calls_per_key(failing_simulator)) == {
        claims[11].idempotency_key,
        claims[13].idempotency_key,
    }
    assert index.due_score(12) == epoch(moved) and not index.is_inflight(12)
    assert index.due_score(14) is None and not index.is_inflight(14)
    failed = store.get(13)
    assert (failed.failed_count, failed.status) == (1, Status.ACTIVE)
    assert index.due_score(13) == epoch(failed.next_schedule_time)
    assert store.history(12, 10) == [] and store.history(14, 10) == []


def test_a_slot_recorded_by_another_worker_meanwhile_is_not_counted_twice(
    config: Config, parts, failing_simulator: RunningSimulator
) -> None:
    store, index, _ = parts
    due_now(store, index, 21, 22)
    claims = claim_all(index, 2, LEASE_S)
    late, rival = dispatcher_of(config, parts), dispatcher_of(config, parts)
    rows = {c.avatar_id: store.get(c.avatar_id) for c in claims}
    # The rival records 21's slot first, as a worker that took it over would.
    rival.dispatch(rows[21], next(c for c in claims if c.avatar_id == 21), Trigger.AUTO)

    called = [(c, late._call_action(rows[c.avatar_id], c, Trigger.AUTO)) for c in claims]
    outcomes = {o.avatar_id: o.result for o in late._record_and_settle(called)}

    assert outcomes == {21: "skipped", 22: "success"}
    assert store.get(21).schedule_count == 1
    assert [h.outcome for h in store.history(21, 10)] == ["success"]


def test_a_stopping_worker_hands_back_the_claims_it_has_not_called(
    config: Config, parts, failing_simulator: RunningSimulator
) -> None:
    store, index, _ = parts
    due_now(store, index, 31, 32, 33, 34)
    claims = claim_all(index, 4, LEASE_S)

    outcomes = dispatcher_of(config, parts).dispatch_batch(claims, stopping=lambda: True)

    assert [o.avatar_id for o in outcomes] == [claims[0].avatar_id]
    handed_back = index.pop_ready_many(10, timeout_s=0).claims
    assert handed_back == claims[1:]  # in order, same tokens, same planned slots
    taker = dispatcher_of(config, parts).dispatch_batch(handed_back)
    assert [o.result for o in taker] == ["success"] * 3
    assert calls_per_key(failing_simulator) == {c.idempotency_key: 1 for c in claims}


def test_a_batch_past_its_budget_hands_back_the_rest_after_the_call_in_hand(
    config: Config, parts, failing_simulator: RunningSimulator
) -> None:
    store, index, _ = parts
    due_now(store, index, 41, 42, 43)
    claims = claim_all(index, 3, LEASE_S)
    failing_simulator.servicer.behaviour = replace(
        failing_simulator.servicer.behaviour, latency_ms=20
    )

    outcomes = dispatcher_of(config, parts, budget_s=0.0).dispatch_batch(claims)

    assert [(o.avatar_id, o.result) for o in outcomes] == [(claims[0].avatar_id, "success")]
    assert index.pop_ready_many(10, timeout_s=0).claims == claims[1:]
    assert all(index.is_inflight(c.avatar_id) for c in claims[1:])


class _WatchingAction:
    """Action that notes, at each call, where Redis holds one other avatar."""

    def __init__(self, inner: ActionClient, index: DelayIndex, watched: int) -> None:
        self.inner, self.index, self.watched = inner, index, watched
        self.seen: list[tuple[float | None, bool]] = []

    def schedule_action(self, avatar_id: int, key: str, trigger: str) -> ActionResult:
        self.seen.append((self.index.due_score(self.watched), self.index.is_inflight(self.watched)))
        return self.inner.schedule_action(avatar_id, key, trigger)


def test_a_skipped_claim_is_back_in_due_before_the_batch_calls_action(
    config: Config, parts, failing_simulator: RunningSimulator
) -> None:
    store, index, action = parts
    due = due_now(store, index, 81, 82)
    claims = claim_all(index, 2, LEASE_S)
    moved = due + timedelta(hours=1)
    move_active(store, 82, moved)
    watching = _WatchingAction(action, index, watched=82)

    Dispatcher(config, store, index, watching, budget_s=60).dispatch_batch(claims)

    assert watching.seen == [(epoch(moved), False)]


class _PausingAction:
    """Action that, on its first call, pauses another avatar and takes long enough
    that the batch must renew its leases before the next call."""

    def __init__(
        self, inner: ActionClient, store: MysqlStore, index: DelayIndex, victim: int, hold_s: float
    ) -> None:
        self.inner, self.store, self.index = inner, store, index
        self.victim, self.hold_s, self.calls = victim, hold_s, 0

    def schedule_action(self, avatar_id: int, key: str, trigger: str) -> ActionResult:
        self.calls += 1
        if self.calls == 1:
            row = self.store.get(self.victim)
            self.store.transition(
                self.victim,
                expected_status="active",
                expected_version=row.version,
                new_status="paused",
            )
            self.index.remove(self.victim)
            deadline = time.monotonic() + self.hold_s
            while time.monotonic() < deadline:  # the call is slow: hold the batch
                time.sleep(0.01)
        return self.inner.schedule_action(avatar_id, key, trigger)


def test_a_long_batch_renews_its_leases_and_drops_a_claim_lost_meanwhile(
    config: Config, parts, failing_simulator: RunningSimulator
) -> None:
    store, index, action = parts
    # Lease 2 s over a 1 s Action timeout: renew once a call has run past 0.5 s.
    short = replace(
        config,
        schedule=replace(config.schedule, lease_seconds=2.0),
        action_rpc=replace(config.action_rpc, timeout_ms=1000),
    )
    due_now(store, index, 51, 52, 53)
    claims = claim_all(index, 3, LEASE_S)
    slow = _PausingAction(action, store, index, victim=claims[1].avatar_id, hold_s=0.7)

    dispatcher = Dispatcher(short, store, index, slow, rng=random.Random(3), budget_s=60)
    renewed_at: list[float] = []
    confirm_leases = index.confirm_leases

    def spying_begin(batch: list[Claim], lease_s: float) -> Confirmed:
        confirmed = confirm_leases(batch, lease_s)
        renewed_at.append(index.client.zscore(index.keys.inflight, claims[2].avatar_id) or 0)
        return confirmed

    index.confirm_leases = spying_begin  # type: ignore[method-assign]
    try:
        outcomes = {o.avatar_id: o.result for o in dispatcher.dispatch_batch(claims)}
    finally:
        del index.confirm_leases

    assert outcomes == {claims[0].avatar_id: "success", claims[2].avatar_id: "success"}
    assert len(renewed_at) == 2 and renewed_at[1] > renewed_at[0]
    assert set(calls_per_key(failing_simulator)) == {
        claims[0].idempotency_key,
        claims[2].idempotency_key,
    }
    assert store.get(claims[1].avatar_id).status == Status.PAUSED
    assert index.sizes()["inflight"] == 0


def attempt(store: MysqlStore, avatar_id: int, key: str, error: str | None = None) -> Attempt:
    """A dispatch of the avatar's current row, now: a success, or a failure with ``error``."""
    row = store.get(avatar_id)
    assert row is not None
    now = datetime.now(UTC)
    slot = {"avatar_id": avatar_id, "expected_version": row.version, "trigger": Trigger.AUTO}
    times = {"planned_at": now, "started_at": now, "finished_at": now, "idempotency_key": key}
    if error is not None:
        retry_time = now + timedelta(minutes=5)
        return Failure(
            **slot, **times, error=error, retry_time=retry_time, max_consecutive_failures=1
        )
    next_time = now + timedelta(hours=2)
    return Success(**slot, **times, action_type="post", action_id=1, next_time=next_time)


def test_one_transaction_records_a_mixed_batch_as_lone_records_would(parts) -> None:
    store, index, _ = parts
    due_now(store, index, 61, 62, 63)
    first = attempt(store, 61, "61:1000")
    batch = [
        first,
        attempt(store, 62, "62:1000"),
        first,
        attempt(store, 63, "63:1000", error="down"),
    ]

    recorded = store.record_many(batch)

    assert [(r.applied, r.duplicate, r.auto_paused) for r in recorded] == [
        (True, False, False),
        (True, False, False),
        (False, True, False),
        (True, False, True),
    ]
    assert recorded[0].row == store.get(61) and recorded[3].row == store.get(63)
    assert (store.get(61).schedule_count, store.get(62).schedule_count) == (1, 1)
    assert (store.get(63).status, store.get(63).pause_reason) == ("paused", "failures")
    assert [len(store.history(a, 20)) for a in (61, 62, 63)] == [1, 1, 1]


def test_a_success_among_an_avatars_latest_history_rows_is_never_recorded_again(parts) -> None:
    store, index, _ = parts
    due_now(store, index, 71, 72)
    store.record_many([attempt(store, 71, "71:1")])
    for n in range(2, RECENT_HISTORY + 1):  # nine later slots: 71:1 is the 10th row back
        store.record_many([attempt(store, 71, f"71:{n}")])
    late = attempt(store, 71, "71:1")

    (again, other) = store.record_many([late, attempt(store, 72, "72:1")])

    assert again.duplicate and not other.duplicate
    assert store.get(71).schedule_count == RECENT_HISTORY
