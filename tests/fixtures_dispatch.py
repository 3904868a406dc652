"""What the dispatch tests share, on real MariaDB, Redis and the Action simulator.

``parts`` is the store, index and Action client of the requesting module's
``config`` fixture (each module sets its own lease and Action timeout);
``failing_simulator`` is an Action simulator that fails avatar ``FAILING``.
``due_now`` and ``claim_all`` bring avatars to a worker's hands as the
poller would: due in MySQL and Redis, then claimed and popped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from me2_devkit.simulators import ActionSimulator, RunningSimulator, serve
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clock import epoch
from me2_scheduler.config import Config
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore

FAILING = 13  # the one avatar ``failing_simulator`` answers with an error

Parts = tuple[MysqlStore, DelayIndex, ActionClient]


@pytest.fixture
def failing_simulator() -> Iterator[RunningSimulator]:
    """An Action simulator in this process, failing avatar ``FAILING`` and no other."""
    running = serve(ActionSimulator(seed=1, fail_avatars={FAILING}), "127.0.0.1:0")
    yield running
    running.stop(grace=0)


@pytest.fixture
def parts(config: Config) -> Iterator[Parts]:
    """The store, index and Action client of the module's ``config``; closed after."""
    made = MysqlStore(config.mysql), DelayIndex(config.redis), ActionClient(config.action_rpc)
    yield made
    for part in reversed(made):
        part.close()


def due_now(store: MysqlStore, index: DelayIndex, *avatar_ids: int, ago_s: int = 2) -> datetime:
    """Create active schedules due ``ago_s`` seconds ago (whole seconds), MySQL first, then
    put them in due; the due time."""
    due = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=ago_s)
    for avatar_id in avatar_ids:
        assert store.create(avatar_id, due) is not None
    index.put_due_many([(avatar_id, epoch(due)) for avatar_id in avatar_ids])
    return due


def claim_all(index: DelayIndex, count: int, lease_s: float) -> list[Claim]:
    """Claim the ``count`` avatars due (exactly that many) and pop their claims."""
    assert index.claim_due(batch=count, lease_s=lease_s) == count
    claims = index.pop_ready_many(count, timeout_s=0).claims
    assert len(claims) == count
    return claims


def calls_per_key(simulator: RunningSimulator) -> dict[str, int]:
    """How many times the simulator's Action was called, by idempotency key."""
    return dict(simulator.servicer.Stats(None, None).calls_per_key)
