"""The Scheduler gRPC server in-process on real MariaDB, Redis and an Action simulator.

``rpc`` is one running server (``Harness``) with its store, index and a stub
over a real channel; ``harnesses`` starts more from config overrides.
``put_in_state`` brings an avatar to a state through the API, and
``Harness.assert_index_matches_mysql`` checks DESIGN §2.3 invariant 1: an
active avatar is in exactly one of due (at its next time) and inflight; no
other avatar is in either.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest

from me2_devkit.simulators import RunningSimulator
from me2_devkit.testing.servers import MariaDBServer, RedisServer, root_query
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clock import epoch
from me2_scheduler.config import Config, MysqlConf, RedisConf, RpcClientConf
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.protos import scheduler_pb2_grpc
from me2_scheduler.rpc_server.server import RpcServer, build_server
from me2_scheduler.rpc_server.servicer import SchedulerServicer
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow

from .support import this_second

MIN_H, MAX_H = 2.0, 6.0  # the default ActionSchedule interval, in hours
CALL_TIMEOUT_S = 10
TAMPERED_NEXT = timedelta(hours=1)  # outside [2 h, 6 h]: a redrawn next time is visible


@dataclass
class Harness:
    """A running server with its store, index and a stub over a real channel."""

    config: Config
    store: MysqlStore
    index: DelayIndex
    rpc: RpcServer
    channel: grpc.Channel
    action: ActionClient
    servicer: SchedulerServicer

    @property
    def stub(self) -> scheduler_pb2_grpc.SchedulerStub:
        return scheduler_pb2_grpc.SchedulerStub(self.channel)

    def call(self, method: str, **fields: Any) -> Any:
        request = getattr(pb, f"{method}Request")(**fields)
        return getattr(self.stub, method)(request, timeout=CALL_TIMEOUT_S)

    def sql(self, statement: str, *args: Any) -> list[tuple]:
        dsn = self.config.mysql.dsn  # the test server's root, on loopback
        return root_query(dsn.port, dsn.database, statement, args or None)

    def history_count(self, avatar_id: int) -> int:
        rows = self.sql(
            "SELECT COUNT(*) FROM avatar_schedule_history WHERE avatar_id=%s", avatar_id
        )
        return rows[0][0]

    def assert_index_matches_mysql(self) -> None:
        """Invariant 1 over every schedule and every member of due and inflight."""
        statuses = dict(self.sql("SELECT avatar_id, status FROM avatar_schedules"))
        client = self.index.client
        due = {int(m): s for m, s in client.zrange(self.index.keys.due, 0, -1, withscores=True)}
        inflight = {int(m) for m in client.zrange(self.index.keys.inflight, 0, -1)}
        assert set(due) | inflight <= {a for a, s in statuses.items() if s == "active"}
        for avatar_id, status in statuses.items():
            if status != "active":
                continue
            assert (avatar_id in due) != (avatar_id in inflight), avatar_id
            if avatar_id in due:
                row = self.store.get(avatar_id)
                assert due[avatar_id] == epoch(row.next_schedule_time), avatar_id


def start_harness(
    config: Config, store: MysqlStore | None = None, index: DelayIndex | None = None
) -> Harness:
    """Serve ``config`` in-process on a free port (``store``/``index`` replace the real ones)."""
    store = store or MysqlStore(config.mysql)
    index = index or DelayIndex(config.redis)
    action = ActionClient(config.action_rpc)
    dispatcher = Dispatcher(config, store, index, action)
    servicer = SchedulerServicer(config, store, index, dispatcher, rng=random.Random(3))
    rpc = build_server(config, servicer, max_workers=8)
    rpc.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{rpc.port}")
    return Harness(config, store, index, rpc, channel, action, servicer)


def stop_harness(harness: Harness) -> None:
    harness.channel.close()
    harness.rpc.stop(grace=0)
    harness.servicer.close()
    harness.action.close()
    harness.index.close()
    harness.store.close()


@pytest.fixture
def rpc_base_config(
    mariadb: MariaDBServer, redis_server: RedisServer, database: str, redis_key: str
) -> Config:
    """A server's config on this test's database (migrated) and Redis key, calling no Action."""
    dsn = mariadb.dsn(database)
    base = replace(
        Config(),
        mode="dev",
        listen_on="127.0.0.1:0",
        timezone="UTC",
        mysql=MysqlConf(data_source=dsn, dsn=parse_dsn(dsn)),
        redis=RedisConf(host=redis_server.address, key=redis_key),
    )
    apply_migrations(base.mysql)
    return base


@pytest.fixture
def make_config(
    rpc_base_config: Config, action_simulator: RunningSimulator
) -> Callable[..., Config]:
    """Configs calling this test's Action simulator; keywords override fields."""
    action_rpc = RpcClientConf(endpoints=(action_simulator.address,), timeout_ms=5000)
    base = replace(rpc_base_config, action_rpc=action_rpc)
    return lambda **overrides: replace(base, **overrides)


@pytest.fixture
def harnesses(make_config: Callable[..., Config]) -> Iterator[Callable[..., Harness]]:
    """Start harnesses from config overrides (and optional store/index); all stopped after.

    A store given as a class is made on the config's MySQL settings.
    """
    started: list[Harness] = []

    def start(store: Any = None, index: Any = None, **overrides: Any) -> Harness:
        config = make_config(**overrides)
        if isinstance(store, type):
            store = store(config.mysql)
        started.append(start_harness(config, store, index))
        return started[-1]

    yield start
    for harness in started:
        stop_harness(harness)


@pytest.fixture
def rpc(harnesses: Callable[..., Harness]) -> Harness:
    return harnesses()


def assert_new_next(row: ScheduleRow, before: datetime, after: datetime) -> None:
    """``next_schedule_time`` was drawn now: in [before + min, after + max] hours."""
    low = before + timedelta(hours=MIN_H)
    high = after + timedelta(hours=MAX_H, seconds=1)
    assert low <= row.next_schedule_time <= high


def put_in_state(rpc: Harness, avatar_id: int, state: str) -> ScheduleRow | None:
    """Bring the avatar to ``state`` through the API, with 3 failures and a 1 h next time."""
    if state == "none":
        return None
    assert rpc.call("EnableAvatarSchedule", avatar_id=avatar_id).code == 0
    if state == "paused":
        assert rpc.call("PauseAvatarSchedule", avatar_id=avatar_id).code == 0
    if state == "disabled":
        assert rpc.call("DisableAvatarSchedule", avatar_id=avatar_id).code == 0
    next_time = this_second() + TAMPERED_NEXT
    rpc.sql(
        "UPDATE avatar_schedules SET failed_count = 3, next_schedule_time = %s"
        " WHERE avatar_id = %s",
        next_time.replace(tzinfo=None),
        avatar_id,
    )
    if state == "active":
        rpc.index.put_due(avatar_id, epoch(next_time))
    rpc.assert_index_matches_mysql()
    return rpc.store.get(avatar_id)
