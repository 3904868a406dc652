"""The gRPC API through the wire, on real MariaDB, Redis and an Action simulator.

Every test starts the server in-process on a free port and talks to it with
the generated stub. After every state-changing call the Redis index is
checked against MySQL (DESIGN §2.3 invariant 1): an active avatar is in
exactly one of due (at its next time) and inflight; no other avatar is in
either.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client import REGISTRY

from me2_devkit.simulators import ActionSimulator, RunningSimulator, SimulatorControl, serve
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port, root_query
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clock import epoch
from me2_scheduler.config import Config, MysqlConf, RedisConf, RpcClientConf
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.protos import scheduler_pb2_grpc
from me2_scheduler.rpc_server import server as rpc_server_module
from me2_scheduler.rpc_server.server import RpcServer, build_server
from me2_scheduler.rpc_server.servicer import SchedulerServicer
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT, ChildContext
from me2_scheduler.timefmt import Display

MIN_H, MAX_H = 2.0, 6.0
CALL_TIMEOUT_S = 10


def wait_until(check: Callable[[], Any], deadline_s: float = 10.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)
    return value


@pytest.fixture
def action_sim() -> Iterator[RunningSimulator]:
    running = serve(ActionSimulator(seed=7), "127.0.0.1:0")
    yield running
    running.stop(grace=0)


@pytest.fixture
def make_config(
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    action_sim: RunningSimulator,
) -> Callable[..., Config]:
    """Configs for this test's database, Redis key and simulator; keywords override."""
    dsn = mariadb.dsn(database)
    base = replace(
        Config(),
        mode="dev",
        listen_on="127.0.0.1:0",
        timezone="UTC",
        mysql=MysqlConf(data_source=dsn, dsn=parse_dsn(dsn)),
        redis=RedisConf(host=redis_server.address, key=redis_key),
        action_rpc=RpcClientConf(endpoints=(action_sim.address,), timeout_ms=5000),
    )
    apply_migrations(base.mysql)
    return lambda **overrides: replace(base, **overrides)


@dataclass
class Harness:
    """A running server with its store, index and a stub over a real channel."""

    config: Config
    store: MysqlStore
    index: DelayIndex
    rpc: RpcServer
    channel: grpc.Channel
    action: ActionClient

    @property
    def stub(self) -> scheduler_pb2_grpc.SchedulerStub:
        return scheduler_pb2_grpc.SchedulerStub(self.channel)

    def call(self, method: str, **fields: Any) -> Any:
        request = getattr(pb, f"{method}Request")(**fields)
        return getattr(self.stub, method)(request, timeout=CALL_TIMEOUT_S)

    def sql(self, statement: str, *args: Any) -> list[tuple]:
        dsn = self.config.mysql.dsn  # the test server's root, on loopback
        return root_query(dsn.port, dsn.database, statement, args)

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
    store = store or MysqlStore(config.mysql)
    index = index or DelayIndex(config.redis)
    action = ActionClient(config.action_rpc)
    dispatcher = Dispatcher(config, store, index, action)
    servicer = SchedulerServicer(config, store, index, dispatcher, rng=random.Random(3))
    rpc = build_server(config, servicer, max_workers=8)
    rpc.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{rpc.port}")
    return Harness(config, store, index, rpc, channel, action)


def stop_harness(harness: Harness) -> None:
    harness.channel.close()
    harness.rpc.stop(grace=0)
    harness.action.close()
    harness.index.close()
    harness.store.close()


@pytest.fixture
def harnesses(make_config: Callable[..., Config]) -> Iterator[Callable[..., Harness]]:
    """Start harnesses from config overrides (and optional store/index); all stopped after."""
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


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def assert_new_next(row: ScheduleRow, before: datetime, after: datetime) -> None:
    """``next_schedule_time`` was drawn now: in [before + min, after + max] hours."""
    low = before + timedelta(hours=MIN_H)
    high = after + timedelta(hours=MAX_H, seconds=1)
    assert low <= row.next_schedule_time <= high


# -- the state table (DESIGN §4), written out independently of policy.py -----

STATES = ("none", "active", "paused", "disabled")
TAMPERED_NEXT = timedelta(hours=1)  # outside [2 h, 6 h]: a redrawn next time is visible

# (call, state) -> (code, what happens to the row)
TABLE = {
    ("EnableAvatarSchedule", "none"): (0, "created"),
    ("EnableAvatarSchedule", "active"): (0, "unchanged"),
    ("EnableAvatarSchedule", "paused"): (0, "reactivated"),
    ("EnableAvatarSchedule", "disabled"): (0, "reactivated"),
    ("PauseAvatarSchedule", "none"): (404, "absent"),
    ("PauseAvatarSchedule", "active"): (0, "paused"),
    ("PauseAvatarSchedule", "paused"): (0, "unchanged"),
    ("PauseAvatarSchedule", "disabled"): (409, "unchanged"),
    ("ResumeAvatarSchedule", "none"): (404, "absent"),
    ("ResumeAvatarSchedule", "active"): (0, "unchanged"),
    ("ResumeAvatarSchedule", "paused"): (0, "reactivated"),
    ("ResumeAvatarSchedule", "disabled"): (409, "unchanged"),
    ("DisableAvatarSchedule", "none"): (404, "absent"),
    ("DisableAvatarSchedule", "active"): (0, "disabled"),
    ("DisableAvatarSchedule", "paused"): (0, "disabled"),
    ("DisableAvatarSchedule", "disabled"): (0, "unchanged"),
    ("TriggerSchedule", "none"): (404, "absent"),
    ("TriggerSchedule", "active"): (0, "dispatched"),
    ("TriggerSchedule", "paused"): (0, "dispatched"),
    ("TriggerSchedule", "disabled"): (409, "unchanged"),
    ("GetAvatarScheduleStatus", "none"): (404, "absent"),
    ("GetAvatarScheduleStatus", "active"): (0, "unchanged"),
    ("GetAvatarScheduleStatus", "paused"): (0, "unchanged"),
    ("GetAvatarScheduleStatus", "disabled"): (0, "unchanged"),
}


def put_in_state(rpc: Harness, avatar_id: int, state: str) -> ScheduleRow | None:
    """Bring the avatar to ``state`` through the API, with 3 failures and a 1 h next time."""
    if state == "none":
        return None
    assert rpc.call("EnableAvatarSchedule", avatar_id=avatar_id).code == 0
    if state == "paused":
        assert rpc.call("PauseAvatarSchedule", avatar_id=avatar_id).code == 0
    if state == "disabled":
        assert rpc.call("DisableAvatarSchedule", avatar_id=avatar_id).code == 0
    next_time = utc_now() + TAMPERED_NEXT
    rpc.sql(
        "UPDATE avatar_schedules SET failed_count = 3, next_schedule_time = %s"
        " WHERE avatar_id = %s",
        next_time.replace(tzinfo=None), avatar_id,
    )  # fmt: skip
    if state == "active":
        rpc.index.put_due(avatar_id, epoch(next_time))
    rpc.assert_index_matches_mysql()
    return rpc.store.get(avatar_id)


def assert_outcome(
    kind: str, state: str, before: ScheduleRow | None, after: ScheduleRow | None,
    times: tuple[datetime, datetime],
) -> None:  # fmt: skip
    if kind == "absent":
        assert after is None
    elif kind == "unchanged":
        assert after == before
    elif kind == "created":
        assert (after.status, after.failed_count, after.schedule_count) == ("active", 0, 0)
        assert_new_next(after, *times)
    elif kind == "reactivated":
        assert (after.status, after.failed_count, after.pause_reason) == ("active", 0, None)
        assert_new_next(after, *times)
    elif kind == "paused":
        assert (after.status, after.pause_reason) == ("paused", "user")
        assert after.next_schedule_time == before.next_schedule_time
    elif kind == "disabled":
        assert after.status == "disabled"
    elif kind == "dispatched":  # a paused avatar too gets a new next time, and stays paused
        assert (after.status, after.pause_reason) == (state, before.pause_reason)
        assert (after.schedule_count, after.failed_count) == (before.schedule_count + 1, 0)
        assert_new_next(after, *times)


@pytest.mark.parametrize(("call", "state"), list(TABLE))
def test_every_call_in_every_state_follows_the_table_and_keeps_redis_in_step(
    rpc: Harness, call: str, state: str
) -> None:
    code, kind = TABLE[(call, state)]
    before = put_in_state(rpc, 42, state)
    started = utc_now()
    reply = rpc.call(call, avatar_id=42)
    times = (started, utc_now())
    after = rpc.store.get(42)
    assert (reply.code, reply.message != "") == (code, True)
    assert_outcome(kind, state, before, after, times)
    rpc.assert_index_matches_mysql()
    if code == 0 and "info" in reply.DESCRIPTOR.fields_by_name:
        assert reply.info.avatar_id == 42
        assert reply.info.status == after.status
        assert reply.info.next_schedule_time == Display("UTC").format(after.next_schedule_time)
    if kind == "dispatched":
        assert reply.action_type == after.last_action_type != ""
        assert reply.action_id > 0


def test_resuming_a_disabled_avatar_points_to_enable(rpc: Harness) -> None:
    put_in_state(rpc, 5, "disabled")
    reply = rpc.call("ResumeAvatarSchedule", avatar_id=5)
    assert reply.code == 409
    assert "EnableAvatarSchedule" in reply.message


def test_an_unknown_avatar_is_not_found(rpc: Harness) -> None:
    reply = rpc.call("GetAvatarScheduleStatus", avatar_id=123456)
    assert (reply.code, reply.info.avatar_id) == (404, 0)


# -- argument checks ----------------------------------------------------------

SINGLE_ID_CALLS = (
    "EnableAvatarSchedule", "PauseAvatarSchedule", "ResumeAvatarSchedule",
    "DisableAvatarSchedule", "TriggerSchedule", "GetAvatarScheduleStatus",
    "GetAvatarScheduleHistory",
)  # fmt: skip


@pytest.mark.parametrize("avatar_id", [0, -1])
def test_a_non_positive_avatar_id_is_invalid_on_every_call(rpc: Harness, avatar_id: int) -> None:
    for call in SINGLE_ID_CALLS:
        reply = rpc.call(call, avatar_id=avatar_id)
        assert (call, reply.code, reply.message) == (
            call, 400, "avatar_id must be a positive integer"
        )  # fmt: skip
    reply = rpc.call("BatchGetScheduleStatus", avatar_ids=[7, avatar_id])
    assert reply.code == 400
    assert rpc.sql("SELECT COUNT(*) FROM avatar_schedules") == [(0,)]


def test_a_batch_of_1001_ids_is_refused_and_1000_is_served(rpc: Harness) -> None:
    for avatar_id in (1, 500, 1000):
        put_in_state(rpc, avatar_id, "active")
    too_many = rpc.call("BatchGetScheduleStatus", avatar_ids=list(range(1, 1002)))
    assert (too_many.code, too_many.message) == (400, "at most 1000 avatar_ids per call")
    assert len(too_many.schedules) == 0
    served = rpc.call("BatchGetScheduleStatus", avatar_ids=list(range(1, 1001)))
    assert served.code == 0
    assert [info.avatar_id for info in served.schedules] == [1, 500, 1000]


def test_a_batch_folds_duplicates_keeps_request_order_and_omits_unknown_ids(rpc: Harness) -> None:
    for avatar_id, state in ((3, "active"), (1, "paused"), (2, "disabled")):
        put_in_state(rpc, avatar_id, state)
    reply = rpc.call("BatchGetScheduleStatus", avatar_ids=[2, 99, 1, 2, 3, 1])
    assert reply.code == 0
    assert [(i.avatar_id, i.status) for i in reply.schedules] == [
        (2, "disabled"), (1, "paused"), (3, "active"),
    ]  # fmt: skip


def test_an_empty_batch_is_an_empty_success(rpc: Harness) -> None:
    reply = rpc.call("BatchGetScheduleStatus", avatar_ids=[])
    assert (reply.code, len(reply.schedules)) == (0, 0)


# -- TriggerSchedule ------------------------------------------------------------


def test_trigger_records_the_dispatch_like_a_worker(rpc: Harness) -> None:
    put_in_state(rpc, 8, "active")
    reply = rpc.call("TriggerSchedule", avatar_id=8)
    assert reply.code == 0
    row = rpc.store.get(8)
    assert (row.schedule_count, row.last_action_type) == (1, reply.action_type)
    [entry] = rpc.store.history(8, 10)
    assert (entry.trigger, entry.outcome, entry.action_type, entry.action_id) == (
        "manual", "success", reply.action_type, reply.action_id,
    )  # fmt: skip
    rpc.assert_index_matches_mysql()


def test_trigger_of_an_avatar_in_flight_is_refused(
    rpc: Harness, action_sim: RunningSimulator
) -> None:
    before = put_in_state(rpc, 9, "active")
    assert rpc.index.claim_one(9, 30) is not None
    reply = rpc.call("TriggerSchedule", avatar_id=9)
    assert (reply.code, reply.message) == (409, "a dispatch is in progress for this avatar")
    assert rpc.store.get(9) == before
    assert rpc.index.is_inflight(9)
    assert SimulatorControl(action_sim.address).stats().total == 0


def test_trigger_of_a_paused_avatar_updates_its_stats_and_next_time_and_leaves_it_paused(
    rpc: Harness,
) -> None:
    before = put_in_state(rpc, 10, "paused")
    started = utc_now()
    reply = rpc.call("TriggerSchedule", avatar_id=10)
    assert reply.code == 0
    row = rpc.store.get(10)
    assert (row.status, row.pause_reason) == ("paused", "user")
    assert (row.schedule_count, row.failed_count) == (before.schedule_count + 1, 0)
    assert row.last_action_type == reply.action_type != ""
    assert started <= row.last_schedule_time <= utc_now()
    assert_new_next(row, started, utc_now())
    # Paused: in neither due nor inflight (invariant 1), so the new time plans nothing.
    assert (rpc.index.due_score(10), rpc.index.is_inflight(10)) == (None, False)
    rpc.assert_index_matches_mysql()


def test_a_triggered_auto_paused_avatar_stays_paused_until_a_resume_draws_its_own_time(
    rpc: Harness, action_sim: RunningSimulator
) -> None:
    put_in_state(rpc, 15, "active")
    control = SimulatorControl(action_sim.address)
    control.configure(fail_avatars=[15])
    replies = [rpc.call("TriggerSchedule", avatar_id=15).code for _ in range(2)]
    assert replies == [500, 500]  # 3 failures + 2: the fifth in a row pauses
    paused = rpc.store.get(15)
    assert (paused.status, paused.pause_reason, paused.failed_count) == ("paused", "failures", 5)
    control.configure(fail_avatars=[])
    started = utc_now()
    assert rpc.call("TriggerSchedule", avatar_id=15).code == 0
    triggered = rpc.store.get(15)
    assert (triggered.status, triggered.pause_reason) == ("paused", "failures")
    assert (triggered.failed_count, triggered.schedule_count) == (0, paused.schedule_count + 1)
    assert_new_next(triggered, started, utc_now())
    rpc.assert_index_matches_mysql()
    resumed = rpc.call("ResumeAvatarSchedule", avatar_id=15)
    assert (resumed.code, resumed.info.status) == (0, "active")
    assert rpc.index.due_score(15) == epoch(rpc.store.get(15).next_schedule_time)
    rpc.assert_index_matches_mysql()


def auto_dispatch(rpc: Harness, avatar_id: int, due: datetime | None = None) -> str:
    """Make the avatar due (in Redis, and in MySQL when ``due`` is given), claim it and
    run a worker's dispatch; the outcome's result."""
    if due is not None:
        rpc.sql(
            "UPDATE avatar_schedules SET next_schedule_time = %s WHERE avatar_id = %s",
            due.replace(tzinfo=None), avatar_id,
        )  # fmt: skip
    rpc.index.put_due(avatar_id, epoch(due or datetime(2000, 1, 1, tzinfo=timezone.utc)))
    assert rpc.index.claim_due(batch=10, lease_s=30) == 1
    claims = rpc.index.pop_ready_many(1, timeout_s=1).claims
    assert len(claims) == 1
    dispatcher = Dispatcher(rpc.config, rpc.store, rpc.index, rpc.action)
    (dispatched,) = dispatcher.dispatch_batch(claims)
    return dispatched.result


def test_schedule_count_counts_successful_dispatches_automatic_and_manual_only(
    rpc: Harness, action_sim: RunningSimulator
) -> None:
    put_in_state(rpc, 16, "active")
    control = SimulatorControl(action_sim.address)
    assert rpc.call("TriggerSchedule", avatar_id=16).code == 0
    control.configure(fail_avatars=[16])
    assert rpc.call("TriggerSchedule", avatar_id=16).code == 500
    control.configure(fail_avatars=[])
    assert auto_dispatch(rpc, 16) == "skipped"  # MySQL says it is not due yet
    assert rpc.store.get(16).schedule_count == 1
    assert auto_dispatch(rpc, 16, due=datetime(2000, 1, 1, tzinfo=timezone.utc)) == "success"
    outcomes = [(e.trigger, e.outcome) for e in reversed(rpc.store.history(16, 10))]
    assert outcomes == [("manual", "success"), ("manual", "failure"), ("auto", "success")]
    assert rpc.store.get(16).schedule_count == 2
    rpc.assert_index_matches_mysql()


def test_trigger_reports_an_action_failure_as_500_and_counts_it(
    rpc: Harness, action_sim: RunningSimulator
) -> None:
    before = put_in_state(rpc, 11, "active")
    SimulatorControl(action_sim.address).configure(fail_avatars=[11])
    reply = rpc.call("TriggerSchedule", avatar_id=11)
    assert reply.code == 500
    assert "simulated failure" in reply.message
    after = rpc.store.get(11)
    assert (after.failed_count, after.schedule_count) == (
        before.failed_count + 1, before.schedule_count,
    )  # fmt: skip
    assert [e.outcome for e in rpc.store.history(11, 10)] == ["failure"]
    rpc.assert_index_matches_mysql()


def test_trigger_reports_an_unanswering_action_as_503_and_counts_it(
    harnesses: Callable[..., Harness], action_sim: RunningSimulator
) -> None:
    rpc = harnesses(action_rpc=RpcClientConf(endpoints=(action_sim.address,), timeout_ms=200))
    before = put_in_state(rpc, 13, "active")
    SimulatorControl(action_sim.address).configure(latency_ms=1000)
    reply = rpc.call("TriggerSchedule", avatar_id=13)
    assert reply.code == 503
    assert "DEADLINE_EXCEEDED" in reply.message
    assert rpc.store.get(13).failed_count == before.failed_count + 1
    rpc.assert_index_matches_mysql()


def test_a_trigger_that_overruns_the_server_timeout_is_deadline_exceeded(
    harnesses: Callable[..., Harness],
    action_sim: RunningSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rpc = harnesses(timeout_ms=200)
    put_in_state(rpc, 12, "active")
    SimulatorControl(action_sim.address).configure(latency_ms=1000)
    caplog.set_level(logging.INFO, logger="me2_scheduler.rpc")
    before = rpc.store.get(12)
    with pytest.raises(grpc.RpcError) as raised:
        rpc.call("TriggerSchedule", avatar_id=12)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "rpc TriggerSchedule avatar_id=12 code=DEADLINE_EXCEEDED" in caplog.text
    # The Action call had the server's 200 ms too: it is cut and recorded as a failure.
    wait_until(lambda: rpc.history_count(12) == 1, what="the cut dispatch to be recorded")
    [entry] = rpc.store.history(12, 10)
    assert (entry.trigger, entry.outcome) == ("manual", "failure")
    after = rpc.store.get(12)
    assert (after.schedule_count, after.failed_count) == (
        before.schedule_count, before.failed_count + 1,
    )  # fmt: skip
    wait_until(lambda: not rpc.index.is_inflight(12), what="the lease to be settled")
    rpc.assert_index_matches_mysql()


class _DisablingStore(MysqlStore):
    """The second read of a schedule finds it disabled by another caller meanwhile."""

    reads = 0

    def get(self, avatar_id: int) -> ScheduleRow | None:
        self.reads += 1
        if self.reads == 2:
            with self._cursor("racing", write=True) as cur:
                cur.execute(
                    "UPDATE avatar_schedules SET status = 'disabled', version = version + 1"
                    " WHERE avatar_id = %s",
                    (avatar_id,),
                )
        return super().get(avatar_id)


def test_a_trigger_whose_avatar_is_disabled_meanwhile_releases_its_claim(
    harnesses: Callable[..., Harness], action_sim: RunningSimulator
) -> None:
    put_in_state(harnesses(), 23, "active")
    rpc = harnesses(store=_DisablingStore)
    reply = rpc.call("TriggerSchedule", avatar_id=23)
    assert reply.code == 409
    assert (rpc.index.due_score(23), rpc.index.is_inflight(23)) == (None, False)
    assert SimulatorControl(action_sim.address).stats().total == 0


# -- history ---------------------------------------------------------------------


def test_history_pages_newest_first_with_a_cursor(rpc: Harness) -> None:
    put_in_state(rpc, 13, "active")
    action_ids = [rpc.call("TriggerSchedule", avatar_id=13).action_id for _ in range(5)]
    pages, cursor = [], 0
    while True:
        reply = rpc.call("GetAvatarScheduleHistory", avatar_id=13, limit=2, cursor=cursor)
        assert reply.code == 0
        pages.append([entry.action_id for entry in reply.entries])
        if not reply.next_cursor:
            break
        assert reply.next_cursor == reply.entries[-1].id
        cursor = reply.next_cursor
    newest_first = action_ids[::-1]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
    whole = rpc.call("GetAvatarScheduleHistory", avatar_id=13)  # limit 0: the default page
    assert ([e.action_id for e in whole.entries], whole.next_cursor) == (newest_first, 0)
    entry = whole.entries[0]
    assert (entry.trigger, entry.outcome, entry.avatar_id) == ("manual", "success", 13)
    assert entry.started_time and entry.finished_time and entry.planned_time


@pytest.mark.parametrize(
    ("fields", "code"),
    [({"limit": 101}, 400), ({"limit": -1}, 400), ({"cursor": -5}, 400), ({"limit": 100}, 0)],
)
def test_history_checks_its_limit_and_cursor(rpc: Harness, fields: dict, code: int) -> None:
    put_in_state(rpc, 14, "active")
    assert rpc.call("GetAvatarScheduleHistory", avatar_id=14, **fields).code == code


def test_history_of_an_avatar_without_schedule_is_not_found(rpc: Harness) -> None:
    assert rpc.call("GetAvatarScheduleHistory", avatar_id=777).code == 404


# -- presentation, health, reflection, logs, metrics -------------------------------


def test_times_are_shown_in_the_service_time_zone(harnesses: Callable[..., Harness]) -> None:
    rpc = harnesses(timezone="Asia/Shanghai")
    put_in_state(rpc, 15, "active")
    rpc.sql(
        "UPDATE avatar_schedules SET next_schedule_time = '2026-01-02 03:04:05'"
        " WHERE avatar_id = 15"
    )
    info = rpc.call("GetAvatarScheduleStatus", avatar_id=15).info
    assert info.next_schedule_time == "2026-01-02 11:04:05"  # UTC+8
    assert info.last_schedule_time == ""  # NULL: never dispatched
    assert info.created_at != ""


def test_health_reports_serving_for_the_server_and_the_service(rpc: Harness) -> None:
    health = health_pb2_grpc.HealthStub(rpc.channel)
    for service in ("", "scheduler.Scheduler"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(("mode", "listed"), [("dev", True), ("pro", False)])
def test_reflection_lists_the_service_only_in_dev_and_test_modes(
    harnesses: Callable[..., Harness], mode: str, listed: bool
) -> None:
    rpc = harnesses(mode=mode)
    database = ProtoReflectionDescriptorDatabase(rpc.channel)
    if listed:
        assert "scheduler.Scheduler" in database.get_services()
    else:
        with pytest.raises(grpc.RpcError) as raised:
            database.get_services()
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_each_call_is_logged_once_and_counted(
    rpc: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {"method": "EnableAvatarSchedule", "code": "0"}
    counted = REGISTRY.get_sample_value("scheduler_rpc_requests_total", labels) or 0
    caplog.set_level(logging.INFO, logger="me2_scheduler.rpc")
    rpc.call("EnableAvatarSchedule", avatar_id=16)
    health_pb2_grpc.HealthStub(rpc.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rpc ")]
    assert len(lines) == 1
    assert lines[0].startswith("rpc EnableAvatarSchedule avatar_id=16 code=0 ")
    assert REGISTRY.get_sample_value("scheduler_rpc_requests_total", labels) == counted + 1


# -- failures ------------------------------------------------------------------------


def test_redis_down_answers_503_in_one_sentence(harnesses: Callable[..., Harness]) -> None:
    dead = RedisConf(host=f"127.0.0.1:{free_port()}", key="dead")
    rpc = harnesses(redis=dead)
    reply = rpc.call("EnableAvatarSchedule", avatar_id=17)
    assert reply.code == 503
    assert reply.message.startswith("storage unavailable: ")
    assert "\n" not in reply.message and "Traceback" not in reply.message
    assert ". " not in reply.message.rstrip(".")
    assert rpc.call("GetAvatarScheduleStatus", avatar_id=17).code == 0  # MySQL alone still reads


def test_mysql_down_answers_503(harnesses: Callable[..., Harness]) -> None:
    dsn = f"root@tcp(127.0.0.1:{free_port()})/nowhere?timeout=1s"
    rpc = harnesses(mysql=MysqlConf(data_source=dsn, dsn=parse_dsn(dsn)))
    reply = rpc.call("GetAvatarScheduleStatus", avatar_id=18)
    assert reply.code == 503
    assert reply.message.startswith("storage unavailable: MySQL")


class _RacingStore(MysqlStore):
    """Before each guarded transition, another writer disables the avatar."""

    def transition(self, avatar_id: int, **kwargs: Any) -> ScheduleRow | None:
        with self._cursor("racing", write=True) as cur:
            cur.execute(
                "UPDATE avatar_schedules SET status = 'disabled', version = version + 1"
                " WHERE avatar_id = %s",
                (avatar_id,),
            )
        return super().transition(avatar_id, **kwargs)


def test_a_lost_race_is_decided_again_on_the_fresh_row(harnesses: Callable[..., Harness]) -> None:
    put_in_state(harnesses(), 19, "active")
    rpc = harnesses(store=_RacingStore)
    reply = rpc.call("PauseAvatarSchedule", avatar_id=19)  # read active, then it was disabled
    assert reply.code == 409
    assert "disabled" in reply.message
    assert rpc.store.get(19).status == "disabled"


def test_two_lost_races_answer_409_changed_concurrently(harnesses: Callable[..., Harness]) -> None:
    put_in_state(harnesses(), 20, "paused")
    rpc = harnesses(store=_RacingStore)
    reply = rpc.call("EnableAvatarSchedule", avatar_id=20)  # disabled → enable races again
    assert (reply.code, reply.message) == (409, "the schedule changed concurrently; retry")


class _BrokenStore(MysqlStore):
    def get(self, avatar_id: int) -> ScheduleRow | None:
        raise ValueError("a bug")


def test_an_unexpected_error_is_a_500_with_the_traceback_only_in_the_log(
    harnesses: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    rpc = harnesses(store=_BrokenStore)
    reply = rpc.call("GetAvatarScheduleStatus", avatar_id=21)
    assert (reply.code, reply.message) == (500, "internal error")
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


# -- the rpc_server role -------------------------------------------------------------


def run_main(config: Config) -> tuple[threading.Thread, ChildContext, list[int]]:
    ctx, result = ChildContext("rpc_server", 0), []
    thread = threading.Thread(target=lambda: result.append(rpc_server_module.main(config, ctx)))
    thread.start()
    return thread, ctx, result


def test_the_role_serves_until_stopped_then_exits_0(make_config: Callable[..., Config]) -> None:
    port = free_port()
    thread, ctx, result = run_main(make_config(listen_on=f"127.0.0.1:{port}"))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        request = pb.EnableAvatarScheduleRequest(avatar_id=22)
        reply = stub.EnableAvatarSchedule(request, timeout=5, wait_for_ready=True)
        assert reply.code == 0
    finally:
        ctx.stop.set()
        thread.join(30)
        channel.close()
    assert not thread.is_alive()
    assert result == [0]


def test_the_role_cannot_boot_on_a_busy_port(make_config: Callable[..., Config]) -> None:
    holder = grpc.server(ThreadPoolExecutor(1), options=[("grpc.so_reuseport", 0)])
    port = holder.add_insecure_port("127.0.0.1:0")
    holder.start()
    try:
        thread, ctx, result = run_main(make_config(listen_on=f"127.0.0.1:{port}"))
        thread.join(30)
        ctx.stop.set()
    finally:
        holder.stop(0)
    assert result == [EXIT_CANNOT_BOOT]


def test_resume_during_a_manual_dispatch_keeps_the_avatar_in_the_index(rpc: Harness) -> None:
    put_in_state(rpc, 14, "paused")
    claim = rpc.index.claim_one(14, 60)  # a TriggerSchedule of the paused avatar in flight
    assert claim is not None
    reply = rpc.call("ResumeAvatarSchedule", avatar_id=14)
    assert reply.code == 0 and reply.info.status == "active"
    # The trigger settles from the row it read (paused): drop. Its lease is gone, so no-op.
    assert rpc.index.ack(claim, None) is False
    assert rpc.index.due_score(14) is not None
    rpc.assert_index_matches_mysql()
