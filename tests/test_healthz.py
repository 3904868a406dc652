"""``/healthz`` on the real process tree: 200 only once the gRPC port serves, and the
dependency that is down named on a line of its own; plus the pieces behind it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from me2_devkit.simulators import RunningSimulator
from me2_devkit.testing.servers import MariaDBServer, RedisServer, temp_root
from me2_devkit.testing.silent_proxy import SilentProxy
from me2_scheduler import health
from me2_scheduler.health import ChildReport, State, Status
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc
from me2_scheduler.supervisor.http import health_answer

from .fixtures_healthz import GATE_ENV
from .fixtures_metrics import REPO, get
from .fixtures_service import start_service, write_service_config
from .support import scratch_database, wait_until

# --- the answer and the reports, alone -------------------------------------------------


def test_degraded_lines_keep_the_200_and_any_other_line_makes_it_503() -> None:
    assert health_answer([]) == (200, "ok\n")
    degraded = "degraded: action: 3 deadlines in a row, channel reset (worker[0])"
    assert health_answer([degraded]) == (200, f"ok\n{degraded}\n")
    down = "down: redis: connection refused (rpc_server[0])"
    assert health_answer([down, degraded]) == (503, f"{down}\n{degraded}\n")


def test_a_board_writes_its_file_and_the_supervisor_reads_it_back(tmp_path: Path) -> None:
    board = health.Board(tmp_path)
    board.announce_listening("127.0.0.1:9000")
    board.report("mysql", "probe", State.DOWN, "no answer\nwithin 3 s")
    board.report("action", "client a", State.DEGRADED, "1 deadline in a row")
    board.report("action", "client b", State.OK)

    read = health.read_report(tmp_path, os.getpid())

    assert read is not None and read.listening == "127.0.0.1:9000"
    assert {name: (s.state, s.reason) for name, s in read.dependencies.items()} == {
        "mysql": (State.DOWN, "no answer within 3 s"),
        "action": (State.DEGRADED, "1 deadline in a row"),
    }
    assert health.read_report(tmp_path, 1) is None  # wrote nothing


def test_an_unreadable_report_counts_as_none(tmp_path: Path) -> None:
    (tmp_path / "7.json").write_text("{not json")
    (tmp_path / "8.json").write_text(json.dumps({"listening": "", "dependencies": {"x": 1}}))
    assert health.read_report(tmp_path, 7) is None
    assert health.read_report(tmp_path, 8) is None


def test_one_line_per_dependency_down_first_with_who_reports_it() -> None:
    now = 1000.0

    def report(**dependencies: tuple[State, str]) -> ChildReport:
        return ChildReport("", {n: Status(s, r, now, now) for n, (s, r) in dependencies.items()})

    reports = {
        "rpc_server[0]": report(mysql=(State.DOWN, "refused"), redis=(State.OK, "")),
        **{
            f"worker[{i}]": report(action=(State.DEGRADED, "2 deadlines in a row"))
            for i in range(5)
        },
        "worker[9]": report(action=(State.OK, "")),
    }
    assert health.dependency_lines(reports, now) == [
        "down: mysql: refused (rpc_server[0])",
        "degraded: action: 2 deadlines in a row (worker[0], worker[1], worker[2] and 2 more)",
    ]


def test_a_problem_nobody_confirmed_lately_is_not_shown() -> None:
    old = Status(State.DEGRADED, "1 deadline in a row", 0.0, 0.0)
    reports = {"rpc_server[0]": ChildReport("", {"action": old})}
    assert health.dependency_lines(reports, health.STALE_S + 1) == []


# --- the real process tree --------------------------------------------------------------


def healthz(port: int) -> tuple[int, str]:
    try:
        return get(f"http://127.0.0.1:{port}/healthz")
    except OSError:  # not listening yet
        return 0, ""


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class GatedService:
    proc: subprocess.Popen
    rpc_port: int
    metrics_port: int
    gate: Path


@pytest.fixture
def gated_service(
    tmp_path: Path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    action_simulator: RunningSimulator,
) -> Iterator[GatedService]:
    """The service with its real roles, its rpc_server held at a gate before it binds."""
    written = write_service_config(
        tmp_path, mariadb, redis_server, database, redis_key, action_simulator.address
    )
    gate = tmp_path / "gate"
    with open(tmp_path / "service.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures_healthz", str(written.path)],
            cwd=REPO,
            env={**os.environ, GATE_ENV: str(gate)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield GatedService(proc, written.rpc_port, written.metrics_port, gate)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_healthz_is_not_200_before_the_grpc_port_serves_and_is_200_once_it_does(
    gated_service: GatedService,
) -> None:
    service = gated_service

    def settled() -> tuple[int, str] | None:
        answer = healthz(service.metrics_port)
        return answer if answer[0] == 200 or "not listening yet" in answer[1] else None

    # Every child runs; the rpc_server waits at its gate, its port not bound.
    assert wait_until(settled, 60, "every child started") == (
        503,
        "starting: rpc_server[0] is not listening yet\n",
    )
    assert not port_accepts(service.rpc_port)

    service.gate.touch()
    wait_until(lambda: healthz(service.metrics_port) == (200, "ok\n"), 60, "healthz 200")

    # The moment /healthz says 200, the API answers: an Enable right away succeeds.
    channel = grpc.insecure_channel(f"127.0.0.1:{service.rpc_port}")
    try:
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        reply = scheduler_pb2_grpc.SchedulerStub(channel).EnableAvatarSchedule(
            scheduler_pb2.EnableAvatarScheduleRequest(avatar_id=1), timeout=5
        )
        assert reply.code == 0, reply.message
    finally:
        channel.close()


def lines_starting(port: int, prefix: str) -> tuple[int, list[str]] | None:
    """``(status, lines)`` of ``/healthz`` once a line starts with ``prefix``."""
    status, body = healthz(port)
    found = [line for line in body.splitlines() if line.startswith(prefix)]
    return (status, found) if found else None


def test_healthz_names_redis_down_with_a_503_and_is_200_again_once_it_is_back(
    tmp_path: Path, mariadb: MariaDBServer, redis_key: str, action_simulator: RunningSimulator
) -> None:
    redis = RedisServer(root=temp_root("me2-redis-healthz-")).start()
    try:
        with scratch_database(mariadb, "healthz") as database:
            running = start_service(tmp_path, mariadb, redis, database, redis_key, action_simulator)
            port = running.metrics_port
            try:
                wait_until(lambda: healthz(port) == (200, "ok\n"), 60, "healthz 200")
                redis.stop()
                status, lines = wait_until(
                    lambda: lines_starting(port, "down: redis: "), 30, "redis named down"
                )
                assert status == 503
                assert len(lines) == 1 and lines[0].endswith("(rpc_server[0])"), lines
                redis.start()  # the same port, empty: the index is rebuilt
                wait_until(lambda: healthz(port) == (200, "ok\n"), 60, "healthz 200 again")
            finally:
                running.service.stop()
    finally:
        redis.stop()


@dataclass
class ProxiedMariaDB:
    """The test's MariaDB as the service sees it: through a ``SilentProxy``."""

    server: MariaDBServer
    proxy: SilentProxy

    @property
    def port(self) -> int:
        return self.server.port

    def dsn(self, database: str, loc: str = "") -> str:
        real = self.server.dsn(database, loc)
        return real.replace(f"127.0.0.1:{self.server.port}", self.proxy.address)

    def query(self, database: str | None, sql: str, args: object = None) -> list[tuple]:
        return self.server.query(database, sql, args)


@pytest.fixture
def proxied_mariadb(mariadb: MariaDBServer) -> Iterator[ProxiedMariaDB]:
    """The test's MariaDB behind a ``SilentProxy`` the test can blackhole."""
    proxy = SilentProxy(mariadb.address).start()
    try:
        yield ProxiedMariaDB(mariadb, proxy)
    finally:
        proxy.stop()  # again, harmless, when the test stopped it


def test_healthz_names_a_blackholed_mysql_down_with_a_503(
    tmp_path: Path,
    proxied_mariadb: ProxiedMariaDB,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    action_simulator: RunningSimulator,
) -> None:
    proxy = proxied_mariadb.proxy
    running = start_service(
        tmp_path, proxied_mariadb, redis_server, database, redis_key, action_simulator
    )
    port = running.metrics_port
    try:
        wait_until(lambda: healthz(port) == (200, "ok\n"), 60, "healthz 200")
        proxy.hold_new(True)
        proxy.silence_existing()  # MySQL accepts connections and never answers
        status, lines = wait_until(
            lambda: lines_starting(port, "down: mysql: "), 30, "mysql named down"
        )
        assert status == 503
        assert len(lines) == 1 and lines[0].endswith("(rpc_server[0])"), lines
    finally:
        proxy.stop()  # every connection closed: the children see errors, not silence
        running.service.stop()
