"""The whole service with etcd: it registers itself, finds Action there, unregisters on stop;
and the seed's own config finds Diary as diary.rpc in ActionRpc's etcd."""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest

from me2_devkit.simulators import DiarySimulator, RunningSimulator, SimulatorControl, serve
from me2_devkit.testing.etcd import EtcdServer
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_devkit.testing.stack import Service, cli_argv
from me2_scheduler.config import Config, load_config
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.supervisor.child import ChildContext
from me2_scheduler.workers import diary
from me2_scheduler.workers.diary import DiaryScheduler, parse_schedule

from .fixtures_etcd import calls_seen
from .support import insert_schedules, service_config, wait_until, write_config

pytestmark = pytest.mark.timeout(240)
_ids = itertools.count(1)

# --- the whole service ---------------------------------------------------------------------


def start_registered_service(
    tmp_path: Path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    etcd_hosts: str,
    key: str,
    action_key: str,
) -> tuple[Service, int]:
    """``me2-scheduler run`` registered as ``key``, finding Action as ``action_key``.

    Intervals are the default hours, so the only Action calls are the test's triggers.
    """
    rpc_port = free_port()
    settings = service_config(
        data_source=mariadb.dsn(database),
        redis_host=redis_server.address,
        redis_key=redis_key,
        listen_on=f"127.0.0.1:{rpc_port}",
        Etcd={"Hosts": [etcd_hosts], "Key": key},
        ActionRpc={"Target": f"etcd://{etcd_hosts}/{action_key}"},
        DiaryRpc={"Target": f"etcd://{etcd_hosts}/{key}.diary"},
        Schedule={"MaxWorkers": 1, "ShutdownTimeoutSeconds": 15},
        DiarySchedule={"CronExpression": "0 3 1 1 *"},
    )
    config_path = write_config(tmp_path / f"scheduler-{next(_ids)}.yaml", settings)
    subprocess.run(cli_argv("init-db", "-f", str(config_path)), check=True, capture_output=True)
    return Service(config_path, tmp_path).start(name=config_path.stem), rpc_port


@pytest.fixture
def service_env(tmp_path, mariadb, redis_server, database, redis_key):
    started: list[Service] = []

    def start(etcd_hosts: str, key: str, action_key: str = "action.rpc") -> tuple[Service, int]:
        service, port = start_registered_service(
            tmp_path, mariadb, redis_server, database, redis_key, etcd_hosts, key, action_key
        )
        started.append(service)
        return service, port

    yield start
    for service in started:
        service.stop()


def test_service_registers_itself_calls_action_through_etcd_and_unregisters_on_stop(
    etcd, client, key, service_env, simulators
):
    action_key = f"{key}.action"
    client.put(f"{action_key}/1", simulators[0].address)
    service, rpc_port = service_env(etcd.address, key, action_key)
    service.wait_ready()
    found = wait_until(lambda: client.get_prefix(f"{key}/")[0], 10, "the registration")
    [(registered, value)] = found.items()
    lease_id = int(registered.removeprefix(f"{key}/"))
    assert value == f"127.0.0.1:{rpc_port}"
    assert client.get(registered).lease == lease_id
    assert client.time_to_live(lease_id)[1] == 10

    with grpc.insecure_channel(value) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        assert (
            stub.EnableAvatarSchedule(
                scheduler_pb2.EnableAvatarScheduleRequest(avatar_id=7), timeout=10
            ).code
            == 0
        )
        reply = stub.TriggerSchedule(scheduler_pb2.TriggerScheduleRequest(avatar_id=7), timeout=10)
    assert reply.code == 0, reply.message
    assert calls_seen(simulators[0]) == 1  # hours-long intervals: the trigger is the only call

    service.process.signal(signal.SIGTERM)
    service.process.wait_for_output(r"etcd: unregistered", 30)
    wait_until(lambda: not client.get_prefix(f"{key}/")[0], 2, "the key gone at once")
    assert service.process.proc.wait(30) == 0


def test_a_killed_service_disappears_from_etcd_within_the_ttl(etcd, client, key, service_env):
    service, _ = service_env(etcd.address, key)
    service.wait_ready()
    wait_until(lambda: client.get_prefix(f"{key}/")[0], 10, "the registration")
    service.process.signal(signal.SIGKILL)
    wait_until(lambda: not client.get_prefix(f"{key}/")[0], 15, "the lease to expire")


def test_a_service_that_cannot_register_stops_with_cannot_boot(key, service_env):
    service, _ = service_env(f"127.0.0.1:{free_port()}", key)
    assert service.process.proc.wait(60) == 3
    assert "cannot register in etcd" in service.process.output()


# --- the seed's own config: DiaryRpc found as diary.rpc in ActionRpc's etcd ------------------

SEED_YAML = Path(__file__).resolve().parents[1] / "etc" / "scheduler-dev.yaml"
SEED_ETCD, SEED_MYSQL = "127.0.0.1:2379", "root:123456@tcp(127.0.0.1:3306)/me2?"


@pytest.fixture
def diary_in_process() -> Iterator[RunningSimulator]:
    running = serve(DiarySimulator(), "127.0.0.1:0")
    yield running
    running.stop(0)


def seed_config_on(tmp_path: Path, etcd: EtcdServer, data_source: str) -> Config:
    """The seed's YAML as it is, but for its etcd and MySQL addresses (the test servers')."""
    text = SEED_YAML.read_text(encoding="utf-8")
    assert text.count(SEED_ETCD) == 2 and text.count(SEED_MYSQL) == 1
    text = text.replace(SEED_ETCD, etcd.address).replace(SEED_MYSQL, data_source + "?")
    path = tmp_path / "scheduler-dev.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path))


def test_the_seed_config_writes_diaries_through_diary_rpc_in_action_rpcs_etcd(
    etcd, client, tmp_path, mariadb, database, diary_in_process, caplog
):
    config = seed_config_on(tmp_path, etcd, f"root@tcp(127.0.0.1:{mariadb.port})/{database}")
    apply_migrations(config.mysql)
    insert_schedules(mariadb, database, [(i, "active", datetime(2024, 1, 1)) for i in (1, 2, 3)])
    client.put("diary.rpc/7587881234567", diary_in_process.address)  # as go-zero registers
    caplog.set_level(logging.INFO, logger="me2_scheduler.diary")
    stopped = ChildContext("diary", 0)
    stopped.stop.set()
    try:
        assert diary.main(config, stopped) == 0  # logs where diaries go, then stops at once
        fire = parse_schedule(config).next(datetime(2024, 6, 1, tzinfo=timezone.utc))
        scheduler = DiaryScheduler(config, clock=lambda: fire)
        try:
            result = scheduler.run_due(fire + timedelta(seconds=1))
        finally:
            scheduler.close()
    finally:
        client.delete("diary.rpc/7587881234567")

    assert result is not None and result.result == "done"
    assert (result.checkpoint.success, result.checkpoint.failure) == (3, 0)
    day = fire.astimezone(parse_schedule(config).tz).date().isoformat()
    with SimulatorControl(diary_in_process.address) as control:
        assert control.stats().calls_per_key == {f"{i}:{day}": 1 for i in (1, 2, 3)}
    lines = [r.getMessage() for r in caplog.records if r.name == "me2_scheduler.diary"]
    source = f"etcd diary.rpc on {etcd.address} (derived from ActionRpc.Etcd)"
    assert f"[DiaryScheduler] DiaryRpc: {source}" in lines
