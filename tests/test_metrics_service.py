"""The real service's metrics, /healthz and JSON log lines, with the Action simulator."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_devkit.testing.stack import Simulator, child_pids

from .fixtures_metrics import Samples, get, parse, total, value
from .fixtures_service import Running, start_service
from .support import scratch_database, wait_until

METRIC_RESULTS = ("success", "failure")


@dataclass
class Observed:
    running: Running
    failing: ClassVar[int] = 3
    metrics_dir: Path | None = None  # found by a test; removed when the service stops

    def scrape(self) -> Samples:
        return parse(self.running.scrape())


@pytest.fixture(scope="module")
def observed(tmp_path_factory, mariadb: MariaDBServer, redis_server: RedisServer):
    tmp = tmp_path_factory.mktemp("observed")
    action = Simulator("action", tmp, ("--fail-avatars", str(Observed.failing))).start()
    try:
        with scratch_database(mariadb, "metrics") as database:
            redis_key = f"test:metrics{os.getpid()}"
            running = start_service(
                tmp, mariadb, redis_server, database, redis_key, action, log_encoding="json"
            )
            running.enable(*range(1, 11))
            yield (observed := Observed(running))
            assert running.service.stop() == 0
            assert observed.metrics_dir is None or not observed.metrics_dir.exists()
    finally:
        action.stop()


def test_the_supervisor_serves_the_metrics_of_every_child(observed: Observed) -> None:
    def both_results() -> Samples | None:
        samples = observed.scrape()
        results = [value(samples, "scheduler_dispatch_total", result=r) for r in METRIC_RESULTS]
        return samples if all(results) else None

    samples = wait_until(both_results, 60, "successes and failures in the scrape")
    enabled = {"method": "EnableAvatarSchedule", "code": "0"}
    assert value(samples, "scheduler_rpc_requests_total", **enabled) == 10
    assert value(samples, "scheduler_index_rebuilds_total") == 1  # the preflight child's
    assert value(samples, "scheduler_dispatch_lag_seconds_count") > 0
    buckets = sorted(
        float(dict(labels)["le"])
        for (name, labels) in samples
        if name == "scheduler_dispatch_lag_seconds_bucket"
    )
    assert buckets[0] == 0.01 and buckets[-2] == 3600
    for role in ("poller", "worker", "diary", "rpc_server"):
        assert value(samples, "scheduler_child_restarts_total", role=role) == 0


def mapped_metric_files(pid: int) -> set[Path]:
    """The multiprocess files a process has mapped (prometheus_client mmaps them)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[-1]) for line in lines if line.endswith(".db")}


def test_every_child_that_recorded_a_metric_has_its_own_files_in_one_dir(
    observed: Observed,
) -> None:
    # A child switches from the supervisor's inherited files to its own at its first write.
    wait_until(lambda: total(observed.scrape(), "scheduler_dispatch_total") > 0, 30, "dispatches")
    writers = [
        observed.running.child(label) for label in ("poller[0]", "rpc_server[0]", "worker[0]")
    ]
    for pid in writers:
        assert {p.name for p in mapped_metric_files(pid)} >= {f"counter_{pid}.db"}
    children = child_pids(observed.running.service.process.pid)
    every = {p for pid in children for p in mapped_metric_files(pid)}
    assert len({p.parent for p in every}) == 1
    observed.metrics_dir = every.pop().parent
    assert observed.metrics_dir.name.startswith("me2-scheduler-metrics-")


def test_counters_never_go_back_when_a_worker_is_killed_and_restarted(observed: Observed) -> None:
    seen: list[float] = []

    def dispatched() -> float:
        seen.append(total(observed.scrape(), "scheduler_dispatch_total"))
        return seen[-1]

    wait_until(lambda: dispatched() >= 10, 60, "dispatches before the kill")
    os.kill(observed.running.child("worker[0]"), signal.SIGKILL)
    before_kill = len(seen)

    def restarted_and_dispatching() -> bool:
        samples = observed.scrape()
        seen.append(total(samples, "scheduler_dispatch_total"))
        restarts = value(samples, "scheduler_child_restarts_total", role="worker")
        return restarts == 1 and seen[-1] > seen[before_kill - 1]

    wait_until(restarted_and_dispatching, 60, "a worker restart and further dispatches")
    assert seen == sorted(seen), seen


def test_healthz_is_200_while_every_child_of_the_service_runs(observed: Observed) -> None:
    url = f"http://127.0.0.1:{observed.running.metrics_port}/healthz"
    assert wait_until(lambda: get(url) == (200, "ok\n"), 30, "healthz 200")


def test_json_log_lines_carry_timestamp_level_content_role_and_avatar_id(
    observed: Observed,
) -> None:
    wait_until(lambda: "调度成功" in observed.running.service.process.output(), 30, "a success")
    entries = [json.loads(line) for line in observed.running.service.process.output().splitlines()]
    assert all({"@timestamp", "level", "content", "role", "pid"} <= e.keys() for e in entries)
    dispatch = [e for e in entries if e["content"].startswith("[TaskExecutor] 开始调度分身")]
    assert dispatch and all(e["avatar_id"] == int(e["content"].split()[-1]) for e in dispatch)
    assert {e["role"] for e in dispatch} <= {"worker[0]", "worker[1]", "worker[2]"}
    assert {"supervisor", "rpc_server[0]", "diary[0]"} <= {e["role"] for e in entries}
    assert {e["level"] for e in entries} <= {"debug", "info", "warn", "error", "severe"}
    failure = next(e for e in entries if "调度失败" in e["content"])
    assert failure["level"] == "error" and failure["avatar_id"] == Observed.failing
