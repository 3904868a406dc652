"""The gRPC server through the wire: history, presentation, health, reflection, logs,
metrics, failures and the rpc_server role, on real MariaDB, Redis and an Action simulator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client import REGISTRY

from me2_devkit.testing.servers import free_port
from me2_scheduler.config import Config, MysqlConf, RedisConf
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.protos import scheduler_pb2_grpc
from me2_scheduler.rpc_server import server as rpc_server_module
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT, ChildContext

from .fixtures_rpc import Harness, put_in_state

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
    # Nothing was written (a next time is drawn by Redis TIME); MySQL alone still answers.
    assert rpc.call("GetAvatarScheduleStatus", avatar_id=17).code == 404


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
