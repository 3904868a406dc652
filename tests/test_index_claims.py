"""The delay index's claims on a real Redis: claim, lease, release, ack, claim_one, and
atomicity across processes."""

from __future__ import annotations

import multiprocessing

import pytest

from me2_scheduler.config import RedisConf
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import DelayIndex

from .fixtures_index import FLOAT_SLACK, LONG_LEASE, due_members, inflight_members


def drain(index: DelayIndex) -> list[Claim]:
    """Every claim in the ready list, in order, popped as workers pop them."""
    claims: list[Claim] = []
    while True:
        popped = index.pop_ready_many(1000, timeout_s=0)
        assert popped.malformed == 0
        if not popped.claims:
            return claims
        claims += popped.claims


def test_claim_takes_only_the_members_due_by_redis_time(index: DelayIndex) -> None:
    now = int(index.now())
    past = {avatar_id: now - 100 + avatar_id for avatar_id in range(1, 6)}
    future = {avatar_id: now + 3600 + avatar_id for avatar_id in range(6, 9)}
    index.put_due_many([*past.items(), *future.items()])

    assert index.claim_due(batch=100, lease_s=LONG_LEASE) == len(past)

    assert due_members(index) == future
    assert inflight_members(index) == set(past)
    claims = drain(index)
    assert {c.avatar_id: c.planned_at for c in claims} == past
    assert index.sizes() == {"due": 3, "overdue": 0, "inflight": 5, "ready": 0}


def test_claim_is_bounded_by_the_batch_and_takes_the_earliest_first(index: DelayIndex) -> None:
    now = int(index.now())
    index.put_due_many((avatar_id, now - 1000 + avatar_id) for avatar_id in range(1, 26))

    counts = [index.claim_due(batch=10, lease_s=LONG_LEASE) for _ in range(4)]

    assert counts == [10, 10, 5, 0]
    assert [c.avatar_id for c in drain(index)] == list(range(1, 26))


def test_each_claim_has_its_own_token_and_the_planned_time_as_idempotency_key(
    index: DelayIndex,
) -> None:
    now = int(index.now())
    index.put_due_many([(7, now - 30), (8, now - 20)])
    index.claim_due(batch=10, lease_s=LONG_LEASE)

    claims = drain(index)

    assert len({c.token for c in claims}) == 2
    assert [c.idempotency_key for c in claims] == [
        f"7:{(now - 30) * 1000}",
        f"8:{(now - 20) * 1000}",
    ]
    leases = index.client.hgetall(index.keys.leases)
    assert leases == {str(c.avatar_id): f"{c.token}:{c.planned_at}" for c in claims}


def test_a_lease_expires_lease_seconds_after_redis_time(index: DelayIndex) -> None:
    index.put_due(1, int(index.now()) - 1)
    before = index.now()

    index.claim_due(batch=1, lease_s=120)

    expiry = index.client.zscore(index.keys.inflight, 1)
    assert before + 120 - FLOAT_SLACK <= expiry <= index.now() + 120 + FLOAT_SLACK


def test_expired_leases_return_to_due_at_their_original_planned_score(index: DelayIndex) -> None:
    now = int(index.now())
    planned = {1: now - 300, 2: now - 200, 3: now - 100}
    index.put_due_many(planned.items())
    index.claim_due(batch=10, lease_s=0)

    released = index.release_expired()

    assert sorted(released) == [1, 2, 3]
    assert due_members(index) == planned
    assert inflight_members(index) == set()
    assert index.client.hlen(index.keys.leases) == 0


def test_unexpired_leases_are_not_released(index: DelayIndex) -> None:
    index.put_due(1, int(index.now()) - 1)
    index.claim_due(batch=1, lease_s=LONG_LEASE)

    assert index.release_expired() == []
    assert index.is_inflight(1)


def test_release_is_bounded_by_its_limit(index: DelayIndex) -> None:
    now = int(index.now())
    index.put_due_many((avatar_id, now - 10) for avatar_id in range(1, 8))
    index.claim_due(batch=10, lease_s=0)

    assert len(index.release_expired(limit=5)) == 5
    assert len(index.release_expired(limit=5)) == 2
    assert index.release_expired(limit=5) == []


def test_a_redispatch_after_an_expired_lease_carries_the_same_idempotency_key(
    index: DelayIndex,
) -> None:
    index.put_due(5, int(index.now()) - 60)
    index.claim_due(batch=1, lease_s=0)
    [first] = index.pop_ready_many(1, timeout_s=0).claims
    index.release_expired()

    index.claim_due(batch=1, lease_s=LONG_LEASE)
    [second] = index.pop_ready_many(1, timeout_s=0).claims

    assert second.token != first.token
    assert second.idempotency_key == first.idempotency_key


def test_ack_with_a_stale_token_after_release_and_reclaim_changes_nothing(
    index: DelayIndex,
) -> None:
    now = int(index.now())
    index.put_due(5, now - 60)
    index.claim_due(batch=1, lease_s=0)
    [stale] = index.pop_ready_many(1, timeout_s=0).claims
    index.release_expired()
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    [current] = index.pop_ready_many(1, timeout_s=0).claims
    leases_before = index.client.hgetall(index.keys.leases)

    assert index.ack(stale, next_due=now + 7200) is False

    assert index.client.hgetall(index.keys.leases) == leases_before
    assert index.is_inflight(5) and index.due_score(5) is None
    assert index.ack(current, next_due=now + 7200) is True
    assert index.due_score(5) == now + 7200 and not index.is_inflight(5)


def test_ack_puts_the_avatar_back_in_due_at_its_next_time(index: DelayIndex) -> None:
    now = int(index.now())
    index.put_due(3, now - 5)
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    [claim] = index.pop_ready_many(1, timeout_s=0).claims

    assert index.ack(claim, next_due=now + 9000) is True

    assert due_members(index) == {3: now + 9000}
    assert inflight_members(index) == set()
    assert index.client.hlen(index.keys.leases) == 0


def test_ack_without_a_next_time_only_ends_the_lease(index: DelayIndex) -> None:
    index.put_due(3, int(index.now()) - 5)
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    [claim] = index.pop_ready_many(1, timeout_s=0).claims

    assert index.ack(claim, next_due=None) is True

    assert index.absent([3]) == [3]


def test_a_second_ack_of_the_same_claim_is_refused(index: DelayIndex) -> None:
    now = int(index.now())
    index.put_due(3, now - 5)
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    [claim] = index.pop_ready_many(1, timeout_s=0).claims
    index.ack(claim, next_due=now + 100)

    assert index.ack(claim, next_due=now + 999) is False
    assert index.due_score(3) == now + 100


def test_remove_while_in_flight_makes_the_later_ack_change_nothing(index: DelayIndex) -> None:
    now = int(index.now())
    index.put_due(9, now - 5)
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    [claim] = index.pop_ready_many(1, timeout_s=0).claims

    assert index.remove(9) is True
    assert index.ack(claim, next_due=now + 3600) is False

    assert index.due_score(9) is None and not index.is_inflight(9)
    assert index.client.hlen(index.keys.leases) == 0


def test_claim_one_takes_the_avatar_out_of_due_planned_at_redis_time(index: DelayIndex) -> None:
    index.put_due(11, int(index.now()) + 3600)
    before = int(index.now())

    claim = index.claim_one(11, lease_s=LONG_LEASE)

    assert claim is not None and claim.avatar_id == 11
    assert before <= claim.planned_at <= index.now()
    assert index.due_score(11) is None and index.is_inflight(11)
    assert index.ack(claim, next_due=before + 60) is True


def test_claim_one_works_for_an_avatar_not_in_due(index: DelayIndex) -> None:
    claim = index.claim_one(12, lease_s=LONG_LEASE)

    assert claim is not None
    assert index.is_inflight(12)


def test_claim_one_refuses_an_avatar_in_flight(index: DelayIndex) -> None:
    index.put_due(13, int(index.now()) - 1)
    index.claim_due(batch=1, lease_s=LONG_LEASE)
    lease = index.client.hget(index.keys.leases, 13)

    assert index.claim_one(13, lease_s=LONG_LEASE) is None
    assert index.client.hget(index.keys.leases, 13) == lease


@pytest.mark.parametrize(("batch", "lease_s"), [(0, 1.0), (1, -1.0)])
def test_claim_rejects_a_bad_batch_or_lease(index: DelayIndex, batch: int, lease_s: float) -> None:
    with pytest.raises(ValueError):
        index.claim_due(batch=batch, lease_s=lease_s)


# -- atomicity across processes --------------------------------------------

PROCESSES = 10
MEMBERS = 10_000


def claim_and_pop(conf: RedisConf, barrier, results, batch: int) -> None:
    """One competing poller+worker: claim and pop until nothing is left.

    Claiming more than all the members can only mean duplicates: stop there,
    so a broken claim fails the test instead of looping forever.
    """
    with DelayIndex(conf) as index:
        claimed, popped = 0, []
        barrier.wait(timeout=120)
        while claimed <= MEMBERS:
            count = index.claim_due(batch=batch, lease_s=LONG_LEASE)
            drained = [claim.avatar_id for claim in drain(index)]
            claimed += count
            popped.extend(drained)
            if count == 0 and not drained:
                break
        results.put((claimed, popped))


@pytest.mark.timeout(240)
def test_concurrent_claims_from_ten_processes_take_each_member_exactly_once(
    index: DelayIndex, redis_conf: RedisConf
) -> None:
    now = int(index.now())
    index.put_due_many((avatar_id, now - 1 - avatar_id % 500) for avatar_id in range(MEMBERS))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=claim_and_pop, args=(redis_conf, barrier, results, 7 + n))
        for n in range(PROCESSES)
    ]
    try:
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=200) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)

    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    popped = [avatar_id for _, ids in outcomes for avatar_id in ids]
    assert sum(claimed for claimed, _ in outcomes) == MEMBERS
    assert len(popped) == MEMBERS
    assert set(popped) == set(range(MEMBERS))
    assert index.sizes() == {"due": 0, "overdue": 0, "inflight": MEMBERS, "ready": 0}
    assert index.client.hlen(index.keys.leases) == MEMBERS


def test_claims_stop_at_the_ready_high_water_mark(index: DelayIndex) -> None:
    now = int(index.now())
    index.put_due_many([(avatar_id, now - 10) for avatar_id in range(1, 31)])

    assert index.claim_due(batch=100, lease_s=LONG_LEASE, max_ready=8) == 8
    assert index.claim_due(batch=100, lease_s=LONG_LEASE, max_ready=8) == 0
    assert len(index.pop_ready_many(2, timeout_s=0).claims) == 2
    assert index.claim_due(batch=100, lease_s=LONG_LEASE, max_ready=8) == 2
    assert index.sizes()["due"] == 20
