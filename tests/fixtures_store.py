"""The MySQL store on this test's database, and dispatch records made as a worker makes them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.policy import Failure, Success
from me2_scheduler.states import Trigger
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore, Recorded, ScheduleRow

from .support import mysql_conf

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CLOCK_NOW = datetime(2026, 3, 1, 11, 0, 0, tzinfo=UTC)


@contextmanager
def open_store(
    mariadb: MariaDBServer, database: str, now: datetime = CLOCK_NOW, **dsn: object
) -> Iterator[MysqlStore]:
    """A store on ``database`` (migrated) whose clock says ``now``; ``dsn`` as ``mysql_conf``."""
    conf = mysql_conf(mariadb, database, **dsn)
    apply_migrations(conf)
    store = MysqlStore(conf, clock=lambda: now)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(mariadb: MariaDBServer, database: str) -> Iterator[MysqlStore]:
    """The store on this test's database, its clock at ``CLOCK_NOW``."""
    with open_store(mariadb, database) as made:
        yield made


def make(store: MysqlStore, avatar_id: int, next_time: datetime = T0) -> ScheduleRow:
    row = store.create(avatar_id, next_time)
    assert row is not None
    return row


def pause(store: MysqlStore, avatar_id: int, reason: str = "user") -> ScheduleRow:
    """Pause an active schedule as the API does, guarded by the version it holds now."""
    row = store.get(avatar_id)
    assert row is not None
    paused = store.transition(
        avatar_id,
        expected_status="active",
        expected_version=row.version,
        new_status="paused",
        pause_reason=reason,
    )
    assert paused is not None
    return paused


def slot(row: ScheduleRow, started_at: datetime, finished_at: datetime) -> dict[str, Any]:
    """What every recorded dispatch of ``row``'s avatar holds: an auto slot planned at T0."""
    return {
        "avatar_id": row.avatar_id,
        "expected_version": row.version,
        "trigger": Trigger.AUTO,
        "planned_at": T0,
        "started_at": started_at,
        "finished_at": finished_at,
    }


def success(store: MysqlStore, row: ScheduleRow, next_time: datetime, **over: Any) -> Recorded:
    """Record one successful dispatch of ``row``'s avatar, as a worker would."""
    fields = slot(row, T0 + timedelta(seconds=2, milliseconds=500), T0 + timedelta(seconds=3))
    fields |= {"idempotency_key": f"{row.avatar_id}:1", "action_type": "post", "action_id": 99}
    (recorded,) = store.record_many([Success(**(fields | {"next_time": next_time} | over))])
    return recorded


def failure(store: MysqlStore, row: ScheduleRow, retry_time: datetime, **over: Any) -> Recorded:
    """Record one failed dispatch of ``row``'s avatar, as a worker would."""
    fields = slot(row, T0, T0 + timedelta(seconds=1))
    fields |= {"idempotency_key": None, "error": "action down", "max_consecutive_failures": 3}
    (recorded,) = store.record_many([Failure(**(fields | {"retry_time": retry_time} | over))])
    return recorded


def success_while_paused(store: MysqlStore, avatar_id: int, next_time: datetime) -> Recorded:
    """Make a schedule, let the user pause it, then record a success of the slot claimed before."""
    claimed = make(store, avatar_id)
    pause(store, avatar_id)
    return success(store, claimed, next_time)
