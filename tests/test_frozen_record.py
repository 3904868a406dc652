"""A worker frozen inside its record gives its row locks up within half a lease,
on real MariaDB, Redis and the Action simulator.

Found by ``make chaos``: a worker stopped (SIGSTOP) with its outcome
transaction open kept the avatars' rows locked for the whole freeze. The
workers that took its claims over called Action, then waited on those locks
in their own record until their use of MySQL timed out; the claims went
round again, and Action saw one slot's key once per lease (three times in a
15 s freeze of a 5 s lease). Now the server drops a worker's session idle for
half a lease, so the taker records at once: Action sees the key twice, once
per holder (the frozen worker's call cannot be taken back), and history once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timezone
from typing import Any

import pytest

from me2_devkit.simulators import RunningSimulator
from me2_scheduler.config import Config, ScheduleConf
from me2_scheduler.errors import StoreError
from me2_scheduler.storage import history
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore, leased_store
from me2_scheduler.storage.mysql_conn import idle_session_s, session_setup
from me2_scheduler.workers.worker import make_dispatcher

from .fixtures_dispatch import claim_all, due_now
from .support import wait_until

LEASE_S = 2.0  # the server drops an idle worker session after idle_session_s(2.0) = 1 s
AVATARS = (41, 42, 43)


@pytest.fixture
def config(dispatch_config, action_simulator: RunningSimulator) -> Config:
    made = dispatch_config(action_simulator.address, schedule=ScheduleConf(lease_seconds=LEASE_S))
    return replace(made, action_rpc=replace(made.action_rpc, timeout_ms=500))


class FreezeInRecord:
    """Stands in for a SIGSTOP of a worker right before it commits its record: the
    first record to run holds its transaction open (rows locked, session idle) until
    ``thaw``; every later record runs as usual."""

    def __init__(self) -> None:
        self.frozen = threading.Event()
        self._thawed = threading.Event()
        self._first = True
        self._lock = threading.Lock()
        self._record = history.record_attempts

    def __call__(self, cur: Any, *args: Any) -> Any:
        recorded = self._record(cur, *args)
        with self._lock:
            freeze, self._first = self._first, False
        if freeze:
            self.frozen.set()
            self._thawed.wait(60)
        return recorded

    def thaw(self) -> None:
        self._thawed.set()


@pytest.fixture
def freeze(monkeypatch: pytest.MonkeyPatch) -> Iterator[FreezeInRecord]:
    frozen = FreezeInRecord()
    monkeypatch.setattr(history, "record_attempts", frozen)
    yield frozen
    frozen.thaw()


def take_over(index: DelayIndex) -> list[Claim]:
    """Wait for the frozen worker's leases to expire, then claim the avatars again, as
    the poller and another worker would; the new claims."""
    released: set[int] = set()

    def all_released() -> bool:
        released.update(index.release_expired())
        return released == set(AVATARS)

    wait_until(all_released, 30, "the frozen worker's leases to expire")
    assert index.claim_due(batch=10, lease_s=LEASE_S) == len(AVATARS)
    return index.pop_ready_many(10, timeout_s=0).claims


def test_a_worker_frozen_inside_its_record_does_not_make_the_taker_call_action_again(
    config: Config,
    parts,
    action_simulator: RunningSimulator,
    freeze: FreezeInRecord,
) -> None:
    store, index, _ = parts
    due_now(store, index, *AVATARS)
    claims = claim_all(index, len(AVATARS), LEASE_S)
    woken: list[BaseException] = []

    def frozen_worker() -> None:
        try:
            make_dispatcher(config).dispatch_batch(claims)
        except BaseException as exc:  # handed to the test thread
            woken.append(exc)

    thread = threading.Thread(target=frozen_worker, daemon=True)
    thread.start()
    assert freeze.frozen.wait(30), "the worker never reached its record"
    try:
        outcomes = make_dispatcher(config).dispatch_batch(take_over(index))
    finally:
        freeze.thaw()
        thread.join(30)

    assert [o.result for o in outcomes] == ["success"] * len(AVATARS)
    # Woken, the frozen worker finds its session gone: its record is not written.
    assert len(woken) == 1 and isinstance(woken[0], StoreError), woken
    calls = action_simulator.servicer.Stats(None, None).calls_per_key
    assert calls == {claim.idempotency_key: 2 for claim in claims}
    for claim in claims:
        (row,) = store.history(claim.avatar_id, 10)
        assert row.idempotency_key == claim.idempotency_key


def connection_id(store: MysqlStore) -> int:
    with store._cursor("test") as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return cur.fetchone()[0]


def test_the_server_drops_a_leased_roles_idle_session_and_the_pool_opens_a_new_one(
    config: Config,
) -> None:
    leased, watcher = leased_store(config.mysql, LEASE_S), MysqlStore(config.mysql)
    try:
        first = connection_id(leased)

        def dropped() -> bool:
            with watcher._cursor("test") as cur:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", [first]
                )
                return cur.fetchone()[0] == 0

        wait_until(dropped, 30, "the server to drop the idle session")
        second = connection_id(leased)  # no error: the pool did not hand the dead one out
        assert second != first
        assert connection_id(watcher) == connection_id(watcher)  # others keep theirs
    finally:
        leased.close()
        watcher.close()


def test_a_session_idle_limit_is_half_a_lease_in_whole_seconds_in_portable_sql() -> None:
    assert [idle_session_s(lease) for lease in (0.5, 2.0, 5.0, 30.0, 31.0)] == [1, 1, 3, 15, 16]
    assert session_setup(timezone.utc) == "SET time_zone = '+00:00'"
    assert session_setup(timezone.utc, 3) == "SET time_zone = '+00:00', wait_timeout = 3"
