"""A worker frozen past its leases calls Action for none of the claims taken over meanwhile,
on real MariaDB, Redis and the Action simulator.

A freeze (SIGSTOP, a paused VM, a starved CPU) can come at any point of a
batch: after the pop, after the pick-up check renewed the leases, or while a
call waits to start (queued behind the in-flight limit, or on a thread of the
pool). Here it is played by a hook at each point that holds every thread of
the dispatcher until the leases expire and a rival worker claims the slots.
Then the woken dispatcher must call Action for none of them, and the rival
for each once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace

import pytest

from me2_devkit.simulators import RunningSimulator
from me2_scheduler.config import Config, ScheduleConf
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.fence import LeaseFence
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import Confirmed, DelayIndex
from me2_scheduler.storage.mysql import MysqlStore

from .fixtures_dispatch import claim_all, due_now
from .support import FakeClock, wait_until

LEASE_S = 1.0  # short, so that a test waits little for the leases to expire
AVATARS = (31, 32, 33, 34)


@pytest.fixture
def config(dispatch_config, action_simulator: RunningSimulator) -> Config:
    made = dispatch_config(action_simulator.address, schedule=ScheduleConf(lease_seconds=LEASE_S))
    return replace(made, action_rpc=replace(made.action_rpc, timeout_ms=500))


def claim_avatars(store: MysqlStore, index: DelayIndex) -> list[Claim]:
    """``AVATARS`` due now, claimed and popped as a worker holds them."""
    due_now(store, index, *AVATARS)
    return claim_all(index, len(AVATARS), LEASE_S)


def take_over(index: DelayIndex) -> list[Claim]:
    """Wait until every lease of the batch expired, release them and claim them again, as
    the poller and a rival worker would; the rival's claims."""
    released: set[int] = set()

    def all_released() -> bool:
        released.update(index.release_expired())
        return released == set(AVATARS)

    wait_until(all_released, 30, "the frozen worker's leases to expire")
    assert index.claim_due(batch=10, lease_s=600) == len(AVATARS)
    return index.pop_ready_many(10, timeout_s=0).claims


class Freeze:
    """Stands in for a SIGSTOP of the dispatcher's process: the first thread to call it
    takes the slots over (see ``take_over``); every other thread that calls it, or that
    renews a lease, waits until that is done."""

    def __init__(self, index: DelayIndex) -> None:
        self.index = index
        self.rival: list[Claim] = []
        self._lock = threading.Lock()
        self._begun = threading.Event()
        self._thawed = threading.Event()

    def __call__(self) -> None:
        with self._lock:
            if not self._begun.is_set():
                self._begun.set()
                self.rival = take_over(self.index)
                self._thawed.set()
        self._thawed.wait(60)

    def hold_renewals(self) -> None:
        """Make the index's lease renewals wait while the freeze lasts."""
        confirm = self.index.confirm_leases

        def frozen_confirm(claims: list[Claim], lease_s: float) -> Confirmed:
            if self._begun.is_set():
                self._thawed.wait(60)
            return confirm(claims, lease_s)

        self.index.confirm_leases = frozen_confirm  # type: ignore[method-assign]


def freeze_after_pop(dispatcher: Dispatcher, freeze: Freeze) -> None:
    freeze()


def freeze_after_pick_up(dispatcher: Dispatcher, freeze: Freeze) -> None:
    """Freeze once the pick-up check's renewal has answered (the first one)."""
    confirm = dispatcher.index.confirm_leases

    def then_freeze(claims: list[Claim], lease_s: float) -> Confirmed:
        confirmed = confirm(claims, lease_s)
        freeze()
        return confirmed

    dispatcher.index.confirm_leases = then_freeze  # type: ignore[method-assign]


def freeze_before_calls_start(dispatcher: Dispatcher, freeze: Freeze) -> None:
    """Freeze every call submitted to the in-flight pool before it starts."""
    freeze.hold_renewals()
    call = dispatcher._call_action

    def frozen_call(*args, **kwargs):
        freeze()
        return call(*args, **kwargs)

    dispatcher._call_action = frozen_call  # type: ignore[method-assign]


FREEZE_POINTS: dict[str, Callable[[Dispatcher, Freeze], None]] = {
    "after-pop": freeze_after_pop,
    "after-pick-up": freeze_after_pick_up,
    "before-calls-start": freeze_before_calls_start,
}


@pytest.mark.parametrize("max_in_flight", [1, 4], ids=["inline", "pool"])
@pytest.mark.parametrize("point", FREEZE_POINTS)
def test_a_worker_woken_after_its_leases_were_taken_over_calls_action_for_none(
    config: Config,
    parts,
    action_simulator: RunningSimulator,
    point: str,
    max_in_flight: int,
) -> None:
    store, index, action = parts
    claims = claim_avatars(store, index)
    woken = Dispatcher(config, store, index, action, max_in_flight=max_in_flight, budget_s=60)
    freeze = Freeze(index)
    FREEZE_POINTS[point](woken, freeze)

    outcomes = woken.dispatch_batch(claims)

    assert action_simulator.servicer.Stats(None, None).calls_per_key == {}
    assert {o.result for o in outcomes} <= {"skipped"}
    assert all(store.history(avatar_id, 10) == [] for avatar_id in AVATARS)
    assert index.renew_leases(freeze.rival, 600) == [True] * len(AVATARS)  # left alone
    rival = Dispatcher(config, store, index, action, rng=random.Random(1), budget_s=60)
    assert [o.result for o in rival.dispatch_batch(freeze.rival)] == ["success"] * len(AVATARS)
    assert action_simulator.servicer.Stats(None, None).calls_per_key == {
        claim.idempotency_key: 1 for claim in claims
    }


def test_a_fence_renews_only_claims_confirmed_too_long_ago_and_all_waiting_at_once() -> None:
    renewals: list[list[Claim]] = []
    lost = Claim(2, 100, "b")

    def renew(claims: list[Claim]) -> list[bool]:
        renewals.append(list(claims))
        return [claim != lost for claim in claims]

    monotonic = FakeClock(0.0)
    fence = LeaseFence(renew, lease_s=30.0, monotonic=monotonic)
    first, third = Claim(1, 100, "a"), Claim(3, 100, "c")
    fence.confirmed([first, lost, third], at=0.0)

    assert fence.holds(first)  # confirmed just now: no round trip
    monotonic.advance(10.5)  # past a third of the lease
    assert fence.holds(third)
    assert not fence.holds(lost)  # found lost by the same renewal
    assert not fence.holds(third)  # let through once only

    assert renewals == [[third, lost]]


def test_a_batch_renewal_refreshes_the_claims_waiting_and_drops_those_it_found_lost() -> None:
    renewals: list[list[Claim]] = []

    def renew(claims: list[Claim]) -> list[bool]:
        renewals.append(list(claims))
        return [True] * len(claims)

    monotonic = FakeClock(0.0)
    fence = LeaseFence(renew, lease_s=30.0, monotonic=monotonic)
    waiting, lost, through = Claim(1, 100, "a"), Claim(2, 100, "b"), Claim(3, 100, "c")
    fence.confirmed([waiting, lost, through], at=0.0)
    assert fence.holds(through)
    monotonic.advance(20.0)

    fence.renewed([through, waiting, lost], [True, True, False], at=15.0)

    assert fence.holds(waiting)  # confirmed 5 s ago: no round trip
    assert not fence.holds(lost) and not fence.holds(through)
    assert renewals == []
