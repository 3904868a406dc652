"""The supervisor's HTTP server: /metrics on its configured path, and /healthz naming down slots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from me2_devkit.testing.servers import free_port
from me2_scheduler.config import PrometheusConf
from me2_scheduler.supervisor.http import Listener, StatusServer, SupervisorMetrics

from .fixtures_metrics import REPO, get, parse, value, write_metrics
from .support import wait_until

# --- the HTTP server -------------------------------------------------------------------


@pytest.fixture
def status_server(tmp_path: Path) -> Iterator[tuple[StatusServer, list[str]]]:
    write_metrics(tmp_path, 'metrics.DISPATCHES.labels(result="failure").inc()')
    problems: list[str] = []
    conf = PrometheusConf(host="127.0.0.1", port=free_port(), path="/custom-metrics")
    server = StatusServer(Listener.for_metrics(conf), str(tmp_path), lambda: list(problems))
    yield server, problems
    server.close()


def test_metrics_are_served_on_the_configured_path(status_server) -> None:
    server, _ = status_server
    status, body = get(f"http://127.0.0.1:{server.port}/custom-metrics")
    assert status == 200
    assert value(parse(body), "scheduler_dispatch_total", result="failure") == 1
    assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 404


def test_healthz_is_200_while_healthy_and_503_with_the_problems_otherwise(status_server) -> None:
    server, problems = status_server
    assert get(f"http://127.0.0.1:{server.port}/healthz") == (200, "ok\n")
    problems.append("down: worker[1]")
    assert get(f"http://127.0.0.1:{server.port}/healthz") == (503, "down: worker[1]\n")


def test_a_scrape_while_a_child_creates_its_file_is_answered(status_server, tmp_path: Path) -> None:
    # A child's .db file exists, still empty, until it is sized: the moment a
    # starting worker is in. Reading it failed on the header and the connection
    # was dropped with no answer (seen in CI as RemoteDisconnected).
    server, _ = status_server
    (tmp_path / "counter_4242.db").touch()
    status, body = get(f"http://127.0.0.1:{server.port}/custom-metrics")
    assert status == 200
    assert value(parse(body), "scheduler_dispatch_total", result="failure") == 1


def test_a_corrupt_metrics_file_is_answered_500_with_a_sentence(
    status_server, tmp_path: Path
) -> None:
    server, _ = status_server
    (tmp_path / "counter_4243.db").write_bytes((1 << 20).to_bytes(4, "little") + bytes(60))
    status, body = get(f"http://127.0.0.1:{server.port}/custom-metrics")
    assert status == 500
    assert body.startswith("cannot render metrics: ")


def test_a_taken_metrics_port_is_reported_and_refused(status_server, tmp_path: Path) -> None:
    server, _ = status_server
    conf = PrometheusConf(host="127.0.0.1", port=server.port)
    assert SupervisorMetrics(str(tmp_path)).start(conf, ["worker"], list) is False


SUPERVISOR = """
import json, sys
from me2_scheduler.config import Config, PrometheusConf, ScheduleConf
from me2_scheduler.supervisor.arbiter import Backoff, RoleSpec, run_service
spec = json.loads(sys.argv[1])
config = Config(
    prometheus=PrometheusConf(host="127.0.0.1", port=spec["port"]),
    schedule=ScheduleConf(shutdown_timeout_seconds=5),
)
roles = [RoleSpec(name, "tests.fixtures_supervisor:" + target) for name, target in spec["roles"]]
sys.exit(run_service(config, roles, None, backoff=Backoff(initial=0.5, cap=2)))
"""


@dataclass
class Supervisor:
    proc: subprocess.Popen
    port: int

    def healthz(self) -> tuple[int, str]:
        try:
            return get(f"http://127.0.0.1:{self.port}/healthz")
        except OSError:  # not listening yet
            return 0, ""


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator:
    started: list[Supervisor] = []

    def start(roles: list[tuple[str, str]], port: int | None = None) -> Supervisor:
        port = port or free_port()
        spec = json.dumps({"port": port, "roles": roles})
        proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, spec],
            cwd=REPO,
            env={**os.environ, "ME2_SUPERVISOR_TEST_DIR": str(tmp_path)},
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "supervisor.log", "ab"),  # noqa: SIM115 - the child's
        )
        started.append(Supervisor(proc, port))
        return started[-1]

    yield start
    for one in started:
        if one.proc.poll() is None:
            one.proc.send_signal(signal.SIGTERM)
            one.proc.wait(30)


def test_healthz_lists_the_slot_of_a_crashing_child_as_down(supervisor) -> None:
    service = supervisor([("idle", "looping"), ("broken", "crashing")])

    def down_reported() -> str | None:
        status, body = service.healthz()
        return body if status == 503 and body.startswith("down") else None

    assert wait_until(down_reported, 30, "a 503 naming a down slot") == "down: broken[0]\n"


def test_healthz_is_200_once_every_child_runs(supervisor) -> None:
    service = supervisor([("idle", "looping")])
    assert wait_until(lambda: service.healthz() == (200, "ok\n"), 30, "healthz 200")


def test_a_metrics_port_in_use_stops_the_start_with_exit_3_before_any_child(
    supervisor, tmp_path: Path
) -> None:
    first = supervisor([("idle", "looping")])
    wait_until(lambda: first.healthz()[0] == 200, 30, "the first supervisor serving")
    second = supervisor([("other", "looping")], port=first.port)
    assert second.proc.wait(30) == 3
    assert "cannot serve metrics on 127.0.0.1" in (tmp_path / "supervisor.log").read_text()
    starts = (tmp_path / "starts").read_text().split()
    assert "other" not in starts
