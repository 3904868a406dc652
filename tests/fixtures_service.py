"""The whole service as a real process tree on real servers, and ways to watch it.

``start_service`` writes a config on compressed time (intervals of seconds),
applies the migrations and starts ``me2-scheduler run``; ``Running`` reads its
database, calls its API, scrapes its metrics and finds its children.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pymysql

from me2_devkit.protos import simulator_pb2
from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_devkit.testing.stack import Service, Simulator, cli_argv
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc

from .support import service_config, write_config

# What ``start_service`` writes unless a keyword overrides it.
DEFAULTS: dict[str, Any] = {
    "action_timeout_ms": 2000,
    "workers": 3,
    "max_in_flight": 0,  # Schedule.MaxInFlight; 0: one call per worker (the default)
    "max_failures": 5,  # Schedule.MaxConsecutiveFailures
    "lease_s": 5,
    "retry_s": 1,
    "min_h": 2 / 3600,
    "max_h": 4 / 3600,
    "cron": "0 3 1 1 *",
    "log_encoding": "plain",
    "diary_port": None,  # the Action simulator's
}


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
        return SimulatorControl(self.action.address).stats()

    def enable(self, *avatar_ids: int) -> None:
        stub = self.stub()
        for avatar_id in avatar_ids:
            request = scheduler_pb2.EnableAvatarScheduleRequest(avatar_id=avatar_id)
            reply = stub.EnableAvatarSchedule(request, timeout=10)
            assert reply.code == 0, reply.message

    def scrape(self) -> str:
        """The supervisor's ``/metrics`` text."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.read().decode()

    def child(self, label: str) -> int:
        """The pid of the child whose process title names ``label`` (``worker[0]``)."""
        for pid in self.service.children():
            if label.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        raise AssertionError(f"no {label} child")


def start_service(
    tmp_path: Path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    action: Simulator,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Running:
    """Write a config, apply migrations and start ``me2-scheduler run``; wait until serving.

    ``env`` is added to the service's environment; ``overrides`` replace
    ``DEFAULTS`` by name.
    """
    values = {**DEFAULTS, **overrides}
    written = write_service_config(
        tmp_path,
        mariadb,
        redis_server,
        database,
        redis_key,
        action.address,
        values,
        ActionRpc={"Endpoints": [action.address], "Timeout": values["action_timeout_ms"]},
        DiaryRpc={"Endpoints": [f"127.0.0.1:{values['diary_port'] or action.port}"]},
        ActionSchedule={"MinIntervalHours": values["min_h"], "MaxIntervalHours": values["max_h"]},
    )
    service = Service(written.path, tmp_path, env=env or {}).start()
    service.wait_ready()
    return Running(
        service, written.path, mariadb, database, action, written.rpc_port, written.metrics_port
    )


@dataclass(frozen=True)
class ServiceConfig:
    """A service's config, written and its migrations applied, and the ports it listens on."""

    path: Path
    rpc_port: int
    metrics_port: int


def write_service_config(
    tmp_path: Path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    action_address: str,
    values: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **sections: Any,
) -> ServiceConfig:
    """Write the config of a service on this test's servers and apply its migrations.

    ``values`` (default ``DEFAULTS``) give its ``Schedule`` (on seconds), the
    diary cron and the log encoding; ``ListenOn`` and ``Prometheus`` get free
    ports; ``sections`` add top-level sections (``Console={...}``). ``env``
    is added to the environment ``init-db`` runs in.
    """
    values = values or DEFAULTS
    rpc_port, metrics_port = free_port(), free_port()
    settings = service_config(
        data_source=mariadb.dsn(database),
        redis_host=redis_server.address,
        redis_key=redis_key,
        action=action_address,
        listen_on=f"127.0.0.1:{rpc_port}",
        Schedule=compressed_schedule(values),
        DiarySchedule={"CronExpression": values["cron"]},
        Prometheus={"Host": "127.0.0.1", "Port": metrics_port},
        Log={"Encoding": values["log_encoding"], "Level": "info"},
        **sections,
    )
    path = write_config(tmp_path / "scheduler.yaml", settings)
    init_env = {**os.environ, **(env or {})}
    subprocess.run(
        cli_argv("init-db", "-f", str(path)), check=True, capture_output=True, env=init_env
    )
    return ServiceConfig(path, rpc_port, metrics_port)


def compressed_schedule(values: dict[str, Any]) -> dict[str, Any]:
    """``Schedule`` on seconds: a short scan, poll, lease and retry."""
    return {
        "ScanInterval": 2,
        "MaxWorkers": values["workers"],
        "MaxInFlight": values["max_in_flight"],
        "PollInterval": 0.1,
        "ClaimBatch": 100,
        "LeaseSeconds": values["lease_s"],
        "RetryDelaySeconds": values["retry_s"],
        "MaxConsecutiveFailures": values["max_failures"],
        "SweepGraceSeconds": 2,
        "ShutdownTimeoutSeconds": 15,
    }
