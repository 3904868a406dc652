"""Metrics from every process, /metrics and /healthz, the poller's gauges and retention, logs.

The multiprocess tests run real processes (the pytest process itself has
prometheus_client in single-process mode, as any importer without the env
has); the poller tests run on the real MariaDB and Redis; the service tests
run ``me2-scheduler run`` with the Action simulator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_devkit.testing.stack import Simulator, child_pids
from me2_scheduler.config import Config, HistoryConf, MysqlConf, PrometheusConf, RedisConf
from me2_scheduler.storage.diary_runs import DiaryRunStore
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.supervisor.http import (
    MULTIPROC_ENV,
    StatusServer,
    SupervisorMetrics,
    render_metrics,
)
from me2_scheduler.workers import poller as poller_module
from me2_scheduler.workers.poller import Poller

from .e2e import Running, start_service, wait_until
from .test_store import insert_rows, mysql_conf, query

REPO = Path(__file__).resolve().parent.parent
UTC = timezone.utc
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

METRIC_RESULTS = ("success", "failure")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def get(url: str) -> tuple[int, str]:
    """GET ``url``: (status, body), also for an error status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- multiprocess mode --------------------------------------------------------------


def test_nothing_the_run_command_imports_loads_prometheus_client_before_the_dir_is_set() -> None:
    # The real CLI path up to the moment run_service exports the dir, then stop.
    done = run_python(
        """
        import sys
        from me2_scheduler.supervisor import http

        def create():
            sys.exit(42 if "prometheus_client" in sys.modules else 0)

        http.MetricsDir.create = staticmethod(create)
        from me2_scheduler import cli
        sys.argv = ["me2-scheduler", "run", "-f", "etc/scheduler-test.yaml"]
        cli.main()
        """,
        env={"PROMETHEUS_MULTIPROC_DIR": ""},
    )
    assert done.returncode == 0, done.stderr


def write_metrics(directory: Path, code: str) -> int:
    """Run ``code`` in a process writing to the multiprocess ``directory``; return its pid."""
    done = run_python(
        "import os\nfrom me2_scheduler import metrics\n" + textwrap.dedent(code) + "\n"
        "print(os.getpid())",
        env={MULTIPROC_ENV: str(directory)},
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_a_scrape_sums_the_counters_of_every_process_dead_or_alive(tmp_path: Path) -> None:
    write_metrics(tmp_path, 'metrics.DISPATCHES.labels(result="success").inc(3)')
    write_metrics(tmp_path, 'metrics.DISPATCHES.labels(result="success").inc(4)')
    body, content_type = render_metrics(str(tmp_path))
    samples = parse(body.decode())
    assert value(samples, "scheduler_dispatch_total", result="success") == 7
    assert value(samples, "scheduler_dispatch_total", result="failure") == 0  # declared at import
    assert content_type.startswith("text/plain")


def test_a_gauge_the_poller_set_outlives_it_and_beats_the_zeros_of_other_processes(
    tmp_path: Path,
) -> None:
    poller_pid = write_metrics(
        tmp_path, 'metrics.AUTO_PAUSED.set(3)\nmetrics.AVATARS.labels(status="active").set(9)'
    )
    write_metrics(tmp_path, "pass")  # a process that only imported the metrics
    SupervisorMetrics(str(tmp_path)).child_reaped(poller_pid)
    samples = parse(render_metrics(str(tmp_path))[0].decode())
    assert value(samples, "scheduler_auto_paused_avatars") == 3
    assert value(samples, "scheduler_avatars", status="active") == 9


# --- the HTTP server -------------------------------------------------------------------


@pytest.fixture
def status_server(tmp_path: Path) -> Iterator[tuple[StatusServer, list[str]]]:
    write_metrics(tmp_path, 'metrics.DISPATCHES.labels(result="failure").inc()')
    problems: list[str] = []
    conf = PrometheusConf(host="127.0.0.1", port=free_port(), path="/custom-metrics")
    server = StatusServer(conf, str(tmp_path), lambda: list(problems))
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
roles = [RoleSpec(name, "tests.supervisor_fixtures:" + target) for name, target in spec["roles"]]
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


# --- the poller: gauges and retention ----------------------------------------------


@dataclass
class Parts:
    mariadb: MariaDBServer
    database: str
    conf: MysqlConf
    store: MysqlStore
    index: DelayIndex

    def query(self, sql: str, *args: object) -> list[tuple]:
        return query(self.mariadb, self.database, sql, args or None)

    def history_times(self) -> list[datetime]:
        return [t for (t,) in self.query("SELECT started_time FROM avatar_schedule_history")]


@pytest.fixture
def parts(mariadb: MariaDBServer, redis_server: RedisServer, database: str, redis_key: str):
    conf = mysql_conf(mariadb, database)
    apply_migrations(conf)
    made = Parts(
        mariadb, database, conf, MysqlStore(conf),
        DelayIndex(RedisConf(host=redis_server.address, key=redis_key)),
    )  # fmt: skip
    yield made
    made.store.close()
    made.index.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_poller(parts: Parts, clock: FakeClock, retention_days: int = 30) -> Poller:
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
    clock = FakeClock()
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
    make_poller(parts, FakeClock(), retention_days=0).tick()
    assert len(parts.history_times()) == 2


def pause(store: MysqlStore, avatar_id: int, reason: str) -> None:
    row = store.get(avatar_id)
    assert row is not None
    store.transition(
        avatar_id, expected_status="active", expected_version=row.version,
        new_status="paused", pause_reason=reason,
    )  # fmt: skip


def test_count_gauges_come_from_mysql_at_most_every_fifteen_seconds(parts: Parts) -> None:
    for avatar_id in (1, 2, 3):
        parts.store.create(avatar_id, NOW)
    clock = FakeClock()
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
    insert_rows(parts.mariadb, parts.database, [(7, "paused", NOW.replace(tzinfo=None))])
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
    make_poller(parts, FakeClock()).tick()
    sizes = {q: gauge("scheduler_queue_size", queue=q) for q in ("due", "overdue", "ready")}
    assert sizes == {"due": 1, "overdue": 0, "ready": 1}
    assert gauge("scheduler_queue_size", queue="inflight") == 1
    assert gauge("scheduler_diary_last_success_timestamp_seconds") == finished.timestamp()


# --- the real service ----------------------------------------------------------------


@dataclass
class Observed:
    running: Running
    failing: ClassVar[int] = 3
    metrics_dir: Path | None = None  # found by a test; removed when the service stops

    def scrape(self) -> Samples:
        status, body = get(f"http://127.0.0.1:{self.running.metrics_port}/metrics")
        assert status == 200, body
        return parse(body)

    def child(self, label: str) -> int:
        for pid in self.running.service.children():
            if f"{label}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        raise AssertionError(f"no {label} child")


@pytest.fixture(scope="module")
def observed(tmp_path_factory, mariadb: MariaDBServer, redis_server: RedisServer):
    tmp = tmp_path_factory.mktemp("observed")
    database = f"metrics{os.getpid()}"
    mariadb.create_database(database)
    action = Simulator("action", tmp, ("--fail-avatars", str(Observed.failing))).start()
    try:
        running = start_service(
            tmp, mariadb, redis_server, database, f"test:metrics{os.getpid()}", action,
            log_encoding="json",
        )  # fmt: skip
        running.enable(*range(1, 11))
        yield (observed := Observed(running))
        assert running.service.stop() == 0
        assert observed.metrics_dir is None or not observed.metrics_dir.exists()
    finally:
        action.stop()
        mariadb.drop_database(database)


def test_the_supervisor_serves_the_metrics_of_every_child(observed: Observed) -> None:
    def both_results() -> Samples | None:
        samples = observed.scrape()
        results = [value(samples, "scheduler_dispatch_total", result=r) for r in METRIC_RESULTS]
        return samples if all(results) else None

    samples = wait_until(both_results, 60, "successes and failures in the scrape")
    assert value(samples, "scheduler_rpc_requests_total",
                 method="EnableAvatarSchedule", code="0") == 10  # fmt: skip
    assert value(samples, "scheduler_index_rebuilds_total") == 1  # the preflight child's
    assert value(samples, "scheduler_dispatch_lag_seconds_count") > 0
    buckets = sorted(float(dict(labels)["le"]) for (name, labels) in samples
                     if name == "scheduler_dispatch_lag_seconds_bucket")  # fmt: skip
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
    writers = [observed.child(label) for label in ("poller[0]", "rpc_server[0]", "worker[0]")]
    for pid in writers:
        assert {p.name for p in mapped_metric_files(pid)} >= {f"counter_{pid}.db"}
    every = {p for pid in child_pids(observed.running.service.process.pid)
             for p in mapped_metric_files(pid)}  # fmt: skip
    assert len({p.parent for p in every}) == 1
    observed.metrics_dir = every.pop().parent
    assert observed.metrics_dir.name.startswith("me2-scheduler-metrics-")


def test_counters_never_go_back_when_a_worker_is_killed_and_restarted(observed: Observed) -> None:
    seen: list[float] = []

    def dispatched() -> float:
        seen.append(total(observed.scrape(), "scheduler_dispatch_total"))
        return seen[-1]

    wait_until(lambda: dispatched() >= 10, 60, "dispatches before the kill")
    os.kill(observed.child("worker[0]"), signal.SIGKILL)
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
