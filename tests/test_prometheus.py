"""The dashboard and the alert rules, proven against a real Prometheus scraping the service.

``promtool`` checks the rules, the example config and a live scrape. Then a
real Prometheus scrapes a running service (real MariaDB and Redis, the Action
and Diary simulators) every second for about 30 s, while avatars succeed,
fail and get auto-paused, a user pauses one, an API call fails with 500, a
worker is killed, an avatar is dropped from Redis and the history table
vanishes for a moment (so errors and lease expiries happen). Every PromQL
expression of the dashboard and of the alert rules is then evaluated through
``/api/v1/query``: each must parse and return at least one series.

Grafana variables are replaced first (``$__rate_interval`` by ``1m``,
``$instance`` by ``.*``). An alert expression is a threshold comparison,
empty while the service is healthy, so its left-hand side is evaluated
instead (``threshold_lhs``); Prometheus evaluating the whole rules every
second without error is checked through ``/api/v1/rules``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from me2_devkit.testing.prometheus import PrometheusServer, threshold_lhs
from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_devkit.testing.stack import Simulator
from me2_scheduler.config import MysqlConf, RedisConf
from me2_scheduler.protos import scheduler_pb2
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore

from .fixtures_service import Running, start_service
from .support import mysql_conf, wait_until

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "etc" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO / "etc" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "etc" / "grafana" / "me2-scheduler.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
SCRAPE_SECONDS = 30
FAILING = (1, 2)  # avatars the Action simulator always fails
PAUSED_BY_USER = 30
DROPPED_FROM_REDIS = 12


def promtool(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=60,
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_expressions() -> list[tuple[str, str]]:
    """``(panel title, expression)`` with the Grafana variables replaced."""
    found = []
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, replacement in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, replacement)
            found.append((panel["title"], expr))
    return found


# --- the files on their own ------------------------------------------------------


def test_promtool_accepts_the_alert_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_accepts_the_example_scrape_config() -> None:
    done = promtool("check", "config", PROMETHEUS_CONFIG.name, cwd=PROMETHEUS_CONFIG.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_the_operators_asked_for_exists_with_summary_and_description() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    asked = {
        "SchedulerDispatchSuccessRateLow": ("scheduler_dispatch_total", "< 0.9", "10m"),
        "SchedulerDispatchLagHigh": ("scheduler_dispatch_lag_seconds_bucket", "> 60", "10m"),
        "SchedulerAutoPausedRising": ("scheduler_auto_paused_avatars", ">", None),
        "SchedulerDiaryRunMissing": ("scheduler_diary_last_success", "> 26 * 3600", None),
        "SchedulerChildRestartStorm": ("scheduler_child_restarts_total", ">", None),
        "SchedulerIndexRepairs": ("scheduler_index_repaired_total", "> 0", None),
        "SchedulerTargetDown": ('up{job="me2-scheduler"}', "== 0", None),
    }
    assert set(rules) == set(asked)
    for name, (metric, comparison, duration) in asked.items():
        rule = rules[name]
        assert metric in rule["expr"] and comparison in rule["expr"], name
        assert duration is None or rule["for"] == duration, name
        assert len(rule["annotations"]["summary"]) > 20, name
        # An on-call reader gets something to run, not only a statement of the problem.
        assert "`" in rule["annotations"]["description"], name


def test_the_dashboard_is_importable_and_leads_with_the_three_numbers() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = dashboard_panels()
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
    leading = [p["title"].lower() for p in panels[:3]]
    assert "success rate" in leading[0] and "lag" in leading[1] and "paused" in leading[2]
    assert [t["legendFormat"] for t in panels[1]["targets"]] == ["p50", "p99"]
    assert "reason" in panels[2]["targets"][0]["expr"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("throughput", "queue", "action latency", "rpc", "diary", "restarts"):
        assert topic in titles, topic


@pytest.mark.parametrize(
    ("expr", "lhs"),
    [
        ("sum(rate(x[10m])) / sum(rate(y[10m])) < 0.9", "sum(rate(x[10m])) / sum(rate(y[10m]))"),
        ("time() - max(g) > 26 * 3600", "time() - max(g)"),
        ('up{job="me2-scheduler"} == 0', 'up{job="me2-scheduler"}'),
        ('sum(x{code=~"5..", a!="b"}) > bool 1', 'sum(x{code=~"5..", a!="b"})'),
        ("x > y", "x > y"),  # not a threshold: kept whole
        ("rate(x[5m])", "rate(x[5m])"),
    ],
)
def test_threshold_lhs_strips_only_a_numeric_threshold(expr: str, lhs: str) -> None:
    assert threshold_lhs(expr) == lhs


# --- a real Prometheus scraping the running service ----------------------------------


@dataclass
class Scraped:
    running: Running
    prometheus: PrometheusServer

    def value(self, expr: str) -> float:
        series = self.prometheus.query(expr)
        return float(series[0]["value"][1]) if series else 0.0


def trigger(running: Running, avatar_id: int) -> int:
    request = scheduler_pb2.TriggerScheduleRequest(avatar_id=avatar_id)
    return running.stub().TriggerSchedule(request, timeout=10).code


def pause(running: Running, avatar_id: int) -> None:
    request = scheduler_pb2.PauseAvatarScheduleRequest(avatar_id=avatar_id)
    assert running.stub().PauseAvatarSchedule(request, timeout=10).code == 0


def hide_history_table_until_errors(running: Running) -> None:
    """Rename the history table until a worker reports the error: its lease then expires."""
    conn = pymysql.connect(
        host="127.0.0.1", port=running.mariadb.port, user="root", database=running.database
    )
    try:
        with conn.cursor() as cur:
            cur.execute("RENAME TABLE avatar_schedule_history TO avatar_schedule_history_away")
            try:
                wait_until(lambda: "scheduler_errors_total{" in running.scrape(), 20, "an error")
            finally:
                cur.execute("RENAME TABLE avatar_schedule_history_away TO avatar_schedule_history")
    finally:
        conn.close()


def seed_avatars(conf: MysqlConf) -> None:
    """Active avatars in MySQL before the start, so the diary's catch-up run has work."""
    apply_migrations(conf)
    store = MysqlStore(conf)
    try:
        soon = datetime.now(timezone.utc) + timedelta(seconds=2)
        for avatar_id in range(1, PAUSED_BY_USER + 1):
            store.create(avatar_id, soon)
    finally:
        store.close()


def make_it_eventful(running: Running, redis_server: RedisServer, redis_key: str) -> None:
    """Every kind of event the dashboard and the alerts count, within a few seconds."""
    pause(running, PAUSED_BY_USER)
    wait_until(lambda: trigger(running, FAILING[0]) == 500, 30, "a Trigger answered 500")
    os.kill(running.child("worker[0]"), signal.SIGKILL)
    index = DelayIndex(RedisConf(host=redis_server.address, key=redis_key))
    try:
        index.remove(DROPPED_FROM_REDIS)
    finally:
        index.close()
    hide_history_table_until_errors(running)


EVENTS = {
    "dispatch failures": 'sum(scheduler_dispatch_total{result="failure"})',
    "auto-pauses": "max(scheduler_auto_paused_avatars)",
    "user pauses": 'max(scheduler_paused_avatars{reason="user"})',
    "RPC 500s": 'sum(scheduler_rpc_requests_total{code="500"})',
    "a worker restart": 'sum(scheduler_child_restarts_total{role="worker"})',
    "an index repair": "sum(scheduler_index_repaired_total)",
    "a lease expiry": "sum(scheduler_lease_expired_total)",
    "errors": "sum(scheduler_errors_total)",
    "a diary run": 'sum(scheduler_diary_runs_total{result="done"})',
    "diary calls": 'sum(scheduler_diary_avatars_total{result="success"})',
}


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDBServer, redis_server: RedisServer
) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("prometheus")
    database, redis_key = f"prom{os.getpid()}", f"test:prom{os.getpid()}"
    mariadb.create_database(database)
    seed_avatars(mysql_conf(mariadb, database))
    failing = ",".join(map(str, FAILING))
    started: list[Any] = []
    try:
        action = Simulator("action", tmp, ("--fail-avatars", failing)).start()
        started.append(action)
        diary = Simulator("diary", tmp).start()
        started.append(diary)
        # cron: the fire time of the last minute is caught up at start
        diary_settings = {"diary_port": diary.port, "cron": "* * * * *"}
        running = start_service(
            tmp, mariadb, redis_server, database, redis_key, action, **diary_settings
        )
        started.append(running.service)
        prometheus = PrometheusServer(
            root=tmp / "prometheus",
            targets=(f"127.0.0.1:{running.metrics_port}",),
            rule_files=(ALERTS,),
        ).start()
        started.append(prometheus)
        began = time.monotonic()
        make_it_eventful(running, redis_server, redis_key)
        scraped = Scraped(running, prometheus)
        for event, expr in EVENTS.items():
            wait_until(lambda expr=expr: scraped.value(expr) > 0, 45, f"{event} in Prometheus")
        wait_until(lambda: time.monotonic() - began >= SCRAPE_SECONDS, SCRAPE_SECONDS, "30 s")
        yield scraped
    finally:
        for one in reversed(started):
            one.stop()
        mariadb.drop_database(database)


def test_promtool_accepts_a_live_scrape_of_the_service(scraped: Scraped) -> None:
    done = promtool("check", "metrics", stdin=scraped.running.scrape())
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_the_service_as_job_me2_scheduler(scraped: Scraped) -> None:
    [target] = scraped.prometheus.targets_up()
    assert target["labels"]["job"] == "me2-scheduler"
    assert target["scrapeUrl"].endswith(f":{scraped.running.metrics_port}/metrics")


@pytest.mark.parametrize(("title", "expr"), dashboard_expressions())
def test_every_dashboard_expression_parses_and_returns_a_series(
    scraped: Scraped, title: str, expr: str
) -> None:
    assert scraped.prometheus.query(expr), f"{title}: no series for {expr}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_expression_parses_and_its_left_hand_side_returns_a_series(
    scraped: Scraped, rule: dict[str, Any]
) -> None:
    scraped.prometheus.query(rule["expr"])  # the whole rule parses (empty while healthy)
    lhs = threshold_lhs(rule["expr"])
    assert lhs != rule["expr"], "an alert expression is <lhs> <comparison> <threshold>"
    assert scraped.prometheus.query(lhs), f"no series for {lhs}"


def test_prometheus_evaluates_every_alert_rule_without_error(scraped: Scraped) -> None:
    rules = [rule for group in scraped.prometheus.rule_groups() for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
