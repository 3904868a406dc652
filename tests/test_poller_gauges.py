"""The poller's gauges (from MySQL and Redis) and its history retention, on real servers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY

from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.config import Config, HistoryConf, MysqlConf, RedisConf
from me2_scheduler.storage.diary_runs import DiaryRunStore
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.workers import poller as poller_module
from me2_scheduler.workers.poller import Poller

from .fixtures_store import pause
from .support import FakeClock, insert_schedules, mysql_conf

UTC = timezone.utc
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class Parts:
    mariadb: MariaDBServer
    database: str
    conf: MysqlConf
    store: MysqlStore
    index: DelayIndex

    def query(self, sql: str, *args: object) -> list[tuple]:
        return self.mariadb.query(self.database, sql, args or None)

    def history_times(self) -> list[datetime]:
        return [t for (t,) in self.query("SELECT started_time FROM avatar_schedule_history")]


@pytest.fixture
def parts(mariadb: MariaDBServer, database: str, redis_conf: RedisConf) -> Iterator[Parts]:
    conf = mysql_conf(mariadb, database)
    apply_migrations(conf)
    made = Parts(mariadb, database, conf, MysqlStore(conf), DelayIndex(redis_conf))
    yield made
    made.store.close()
    made.index.close()


def make_poller(parts: Parts, clock: FakeClock[float], retention_days: int = 30) -> Poller:
    config = Config(mysql=parts.conf, history=HistoryConf(retention_days=retention_days))
    diary_runs = DiaryRunStore(parts.conf)
    return Poller(
        config, parts.store, parts.index, diary_runs=diary_runs, clock=clock, wall=lambda: NOW
    )


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def add_history(parts: Parts, started: datetime, count: int) -> None:
    """``count`` history rows started at ``started``, one per avatar (written as MySQL holds it)."""
    stored = started.astimezone(timezone.utc).replace(tzinfo=None)
    for i in range(count):
        parts.query(
            "INSERT INTO avatar_schedule_history (avatar_id, `trigger`, started_time, outcome)"
            " VALUES (%s, 'auto', %s, 'skipped')",
            i + 1,
            stored,
        )


def test_history_is_pruned_a_batch_per_tick_and_at_most_once_an_hour(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller_module, "PRUNE_BATCH", 3)
    old, recent = NOW - timedelta(days=31), NOW - timedelta(days=29)
    add_history(parts, old, 7)
    add_history(parts, recent, 2)
    clock = FakeClock(1000.0)
    poller = make_poller(parts, clock)
    pruned_before = gauge("scheduler_history_pruned_total") or 0.0
    left = []
    for _ in range(4):
        poller.tick()
        left.append(len(parts.history_times()))
    assert left == [6, 3, 2, 2]  # 3 per tick at most: never one big transaction
    assert gauge("scheduler_history_pruned_total") == pruned_before + 7
    add_history(parts, old, 2)
    clock.now += 3599
    poller.tick()
    assert len(parts.history_times()) == 4  # the hour is not up: nothing deleted
    clock.now += 1
    poller.tick()
    assert parts.history_times() == [recent.replace(tzinfo=None)] * 2


def test_retention_days_zero_keeps_history_forever(parts: Parts) -> None:
    add_history(parts, NOW - timedelta(days=3650), 2)
    make_poller(parts, FakeClock(1000.0), retention_days=0).tick()
    assert len(parts.history_times()) == 2


def test_count_gauges_come_from_mysql_at_most_every_fifteen_seconds(parts: Parts) -> None:
    for avatar_id in (1, 2, 3):
        parts.store.create(avatar_id, NOW)
    clock = FakeClock(1000.0)
    poller = make_poller(parts, clock)
    poller.tick()
    assert gauge("scheduler_avatars", status="active") == 3
    pause(parts.store, 1, "failures")
    pause(parts.store, 2, "user")
    clock.now += 14
    poller.tick()
    assert gauge("scheduler_avatars", status="active") == 3  # not read again yet
    clock.now += 1
    poller.tick()
    assert gauge("scheduler_avatars", status="active") == 1
    assert gauge("scheduler_paused_avatars", reason="user") == 1
    assert gauge("scheduler_paused_avatars", reason="failures") == 1
    assert gauge("scheduler_auto_paused_avatars") == 1


def test_a_row_paused_without_a_reason_counts_as_unknown(parts: Parts) -> None:
    # Rows the Go original paused have no pause_reason.
    insert_schedules(parts.mariadb, parts.database, [(7, "paused", NOW.replace(tzinfo=None))])
    assert parts.store.paused_by_reason() == {"user": 0, "failures": 0, "unknown": 1}


def test_queue_gauges_follow_redis_and_the_diary_gauge_follows_mysql(parts: Parts) -> None:
    now = int(parts.index.now())
    parts.index.put_due(5, now - 3600)  # overdue: the tick claims it before the gauges
    parts.index.put_due(6, now + 3600)
    finished = datetime(2026, 5, 31, 22, 5, tzinfo=UTC)
    parts.query(
        "INSERT INTO diary_runs (run_date, status, fire_time, finished_at)"
        " VALUES ('2026-05-31', 'done', '2026-05-31 22:00:00', %s)",
        finished.replace(tzinfo=None),
    )
    make_poller(parts, FakeClock(1000.0)).tick()
    sizes = {q: gauge("scheduler_queue_size", queue=q) for q in ("due", "overdue", "ready")}
    assert sizes == {"due": 1, "overdue": 0, "ready": 1}
    assert gauge("scheduler_queue_size", queue="inflight") == 1
    assert gauge("scheduler_diary_last_success_timestamp_seconds") == finished.timestamp()
