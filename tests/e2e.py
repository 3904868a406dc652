"""Helpers for end-to-end tests: a running service on real servers, and ways to watch it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pymysql

from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_devkit.testing.stack import Service, Simulator, cli_argv
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc, simulator_pb2

T = TypeVar("T")

CONFIG_TEMPLATE = """\
Name: scheduler.rpc
Mode: test
ListenOn: 127.0.0.1:{rpc_port}
Timezone: UTC
Mysql:
  DataSource: root@tcp(127.0.0.1:{mysql_port})/{database}?charset=utf8mb4&parseTime=true
Redis:
  Host: 127.0.0.1:{redis_port}
  Key: {redis_key}
ActionRpc:
  Endpoints: [127.0.0.1:{action_port}]
  Timeout: {action_timeout_ms}
DiaryRpc:
  Endpoints: [127.0.0.1:{diary_port}]
Schedule:
  ScanInterval: 2
  MaxWorkers: {workers}
  PollInterval: 0.1
  ClaimBatch: 100
  LeaseSeconds: {lease_s}
  RetryDelaySeconds: {retry_s}
  MaxConsecutiveFailures: 5
  SweepGraceSeconds: 2
  ShutdownTimeoutSeconds: 15
ActionSchedule:
  MinIntervalHours: {min_h}
  MaxIntervalHours: {max_h}
DiarySchedule:
  CronExpression: "{cron}"
Prometheus:
  Host: 127.0.0.1
  Port: {metrics_port}
Log:
  Encoding: {log_encoding}
  Level: info
"""


def wait_until(check: Callable[[], T], deadline_s: float = 30.0, what: str = "") -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what or check}")
        time.sleep(0.05)


@dataclass
class Running:
    """A started service with its config, database and simulator."""

    service: Service
    config_path: Path
    mariadb: MariaDBServer
    database: str
    action: Simulator
    rpc_port: int
    metrics_port: int = 0

    def stub(self) -> scheduler_pb2_grpc.SchedulerStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.rpc_port}")
        return scheduler_pb2_grpc.SchedulerStub(channel)

    def query(self, sql: str, *args: object) -> list[tuple]:
        return self.mariadb.query(self.database, sql, args or None)

    def row(self, avatar_id: int) -> dict:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.mariadb.port,
            user="root",
            database=self.database,
            cursorclass=pymysql.cursors.DictCursor,
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM avatar_schedules WHERE avatar_id=%s", (avatar_id,))
                return cur.fetchone()
        finally:
            conn.close()

    def history(self, avatar_id: int) -> list[tuple]:
        return self.query(
            "SELECT outcome, `trigger`, planned_time, started_time, idempotency_key "
            "FROM avatar_schedule_history WHERE avatar_id=%s ORDER BY id",
            avatar_id,
        )

    def action_stats(self) -> simulator_pb2.StatsResponse:
        from me2_devkit.simulators import SimulatorControl

        return SimulatorControl(self.action.address).stats()

    def enable(self, *avatar_ids: int) -> None:
        stub = self.stub()
        for avatar_id in avatar_ids:
            request = scheduler_pb2.EnableAvatarScheduleRequest(avatar_id=avatar_id)
            reply = stub.EnableAvatarSchedule(request, timeout=10)
            assert reply.code == 0, reply.message


def start_service(
    tmp_path: Path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    action: Simulator,
    **overrides: object,
) -> Running:
    """Write a config, apply migrations and start ``me2-scheduler run``; wait until serving."""
    import subprocess

    values = {
        "rpc_port": free_port(),
        "mysql_port": mariadb.port,
        "database": database,
        "redis_port": redis_server.port,
        "redis_key": redis_key,
        "action_port": action.port,
        "action_timeout_ms": 2000,
        "workers": 3,
        "lease_s": 5,
        "retry_s": 1,
        "min_h": 2 / 3600,
        "max_h": 4 / 3600,
        "diary_port": action.port,
        "cron": "0 3 1 1 *",
        "metrics_port": free_port(),
        "log_encoding": "plain",
        **overrides,
    }
    config_path = tmp_path / "scheduler.yaml"
    config_path.write_text(CONFIG_TEMPLATE.format(**values))
    subprocess.run(cli_argv("init-db", "-f", str(config_path)), check=True, capture_output=True)
    service = Service(config_path, tmp_path).start()
    service.wait_ready()
    return Running(
        service,
        config_path,
        mariadb,
        database,
        action,
        int(values["rpc_port"]),
        int(values["metrics_port"]),
    )
