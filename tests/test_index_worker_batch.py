"""A worker's pick-up on a real Redis: it pops a batch of claims, renews their leases
(refusing the stale ones), hands back what it did not try, and settles each on its token."""

from __future__ import annotations

from me2_scheduler.storage.index import DelayIndex, Popped

from .fixtures_index import FLOAT_SLACK, LONG_LEASE, due_members, inflight_members


def test_renewing_refuses_a_claim_whose_lease_was_released_and_keeps_its_reclaim(
    index: DelayIndex,
) -> None:
    index.put_due(4, int(index.now()) - 5)
    index.claim_due(batch=1, lease_s=0)
    index.release_expired()
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    lease = index.client.hget(index.keys.leases, 4)

    released, current = index.pop_ready_many(10, timeout_s=0).claims

    assert index.renew_leases([released, current], lease_s=LONG_LEASE) == [False, True]
    assert lease == f"{current.token}:{current.planned_at}"
    assert index.sizes()["ready"] == 0


def test_renewing_restarts_the_lease_of_a_current_claim(index: DelayIndex) -> None:
    index.put_due(4, int(index.now()) - 5)
    index.claim_due(batch=1, lease_s=5)
    claims, _ = index.pop_ready_many(1, timeout_s=0)
    before = index.now()

    assert index.renew_leases(claims, lease_s=LONG_LEASE) == [True]

    assert index.client.zscore(index.keys.inflight, 4) >= before + LONG_LEASE - FLOAT_SLACK


def test_renewing_refuses_a_claim_made_stale_after_it_was_popped(index: DelayIndex) -> None:
    index.put_due(4, int(index.now()) - 5)
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    claims, _ = index.pop_ready_many(1, timeout_s=0)
    index.remove(4)

    assert index.renew_leases(claims, lease_s=LONG_LEASE) == [False]
    assert not index.is_inflight(4)


def test_popping_an_empty_ready_list_returns_no_claims_with_or_without_waiting(
    index: DelayIndex,
) -> None:
    assert index.pop_ready_many(5, timeout_s=0) == Popped([], 0)
    assert index.pop_ready_many(5, timeout_s=0.05) == Popped([], 0)


def claimed(index: DelayIndex, count: int) -> None:
    now = int(index.now())
    index.put_due_many((avatar_id, now - 100 + avatar_id) for avatar_id in range(1, count + 1))
    assert index.claim_due(batch=count, lease_s=LONG_LEASE) == count


def test_a_worker_pops_at_most_its_batch_in_claim_order(index: DelayIndex) -> None:
    claimed(index, 5)

    batches = [index.pop_ready_many(3, timeout_s=0).claims for _ in range(3)]

    assert [[c.avatar_id for c in batch] for batch in batches] == [[1, 2, 3], [4, 5], []]


def test_a_malformed_ready_entry_is_dropped_counted_and_the_claims_around_it_kept(
    index: DelayIndex,
) -> None:
    claimed(index, 2)
    first = index.client.lindex(index.keys.ready, 0)
    index.client.linsert(index.keys.ready, "AFTER", first, "not-a-claim")

    claims, malformed = index.pop_ready_many(10, timeout_s=0)

    assert [c.avatar_id for c in claims] == [1, 2]
    assert malformed == 1
    assert index.ready_length() == 0


def test_requeued_claims_come_back_first_in_order_with_their_slots(index: DelayIndex) -> None:
    claimed(index, 4)
    _dispatched, *rest = index.pop_ready_many(4, timeout_s=0).claims
    trigger = index.claim_one(99, LONG_LEASE)  # planned with milliseconds
    assert trigger is not None

    index.requeue([*rest, trigger])

    again, _ = index.pop_ready_many(10, timeout_s=0)
    assert again == [*rest, trigger]
    assert [c.idempotency_key for c in again] == [c.idempotency_key for c in [*rest, trigger]]
    assert index.renew_leases(again, LONG_LEASE) == [True] * 4  # leases untouched


def test_a_batch_renews_and_settles_each_claim_on_its_own_token(index: DelayIndex) -> None:
    claimed(index, 2)
    kept, paused = index.pop_ready_many(2, timeout_s=0).claims
    index.remove(paused.avatar_id)  # a pause takes the lease

    assert index.renew_leases([kept, paused], LONG_LEASE) == [True, False]
    later = int(index.now()) + 3600
    assert index.ack_many([(kept, later), (paused, later)]) == [True, False]
    assert due_members(index) == {kept.avatar_id: later}
    assert inflight_members(index) == set()
