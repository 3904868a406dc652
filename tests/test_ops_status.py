"""``status`` on real MariaDB and Redis, with the supervisor's real /healthz server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from me2_devkit.testing.servers import free_port
from me2_scheduler.clock import epoch
from me2_scheduler.config import PrometheusConf
from me2_scheduler.ops import index_ops
from me2_scheduler.ops.status import SECTIONS
from me2_scheduler.supervisor.http import Listener, StatusServer
from me2_scheduler.timefmt import TIME_FORMAT

from .fixtures_ops import OpsEnv, assert_one_error_line, invoke, run_cli
from .support import this_second

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def health(tmp_path: Path) -> Iterator[Callable[[list[str]], int]]:
    """Start the supervisor's real ``/healthz`` server reporting the given problems."""
    servers: list[StatusServer] = []

    def start(problems: list[str]) -> int:
        conf = PrometheusConf(host="127.0.0.1", port=0)
        servers.append(StatusServer(Listener.for_metrics(conf), str(tmp_path), lambda: problems))
        return servers[-1].port

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def populated(ops: OpsEnv) -> OpsEnv:
    """Six active avatars (two overdue, one in flight), three paused (one by failures),
    one disabled, a ready entry and two diary runs."""
    now = this_second()
    hour = timedelta(hours=1)
    ops.insert_schedules(
        [(1, "active", now - hour, None), (2, "active", now - 2 * hour, None)]
        + [(i, "active", now + timedelta(hours=i), None) for i in (3, 4, 5, 6)]
        + [(7, "paused", now, "user"), (8, "paused", now, "user"), (9, "paused", now, "failures")]
        + [(10, "disabled", now, None)]
    )
    index_ops.rebuild(ops.store, ops.index)
    client, keys = ops.index.client, ops.index.keys
    client.zrem(keys.due, 6)
    client.zadd(keys.inflight, {"6": epoch(now) + 30})
    client.rpush(keys.ready, "5:0:token")
    ops.sql(
        "INSERT INTO diary_runs (run_date, fire_time, status, success_count, failure_count, total)"
        " VALUES ('2030-01-01', '2030-01-01 14:00:00', 'done', 8, 1, 9),"
        " ('2030-01-02', '2030-01-02 14:00:00', 'running', 2, 0, NULL)"
    )
    return ops


def test_status_json_has_every_section_with_the_counts_queues_next_due_runs_and_service(
    populated: OpsEnv, health: Callable[[list[str]], int]
) -> None:
    port = health(["down: worker[2]"])
    path = populated.write_config(
        "status.yaml", timezone="Asia/Shanghai", prometheus=("127.0.0.1", port)
    )

    result = invoke("status", "-f", str(path), "--json")

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert tuple(status) == SECTIONS
    assert status["avatars"] == {"active": 6, "paused": 3, "disabled": 1}
    assert status["auto_paused"] == 1
    assert status["index"] == {"built": True}
    assert status["queues"] == {"due": 5, "overdue": 2, "inflight": 1, "ready": 1}
    assert [entry["avatar_id"] for entry in status["next_due"]] == [2, 1, 3, 4, 5]
    due = populated.active_due()
    for entry in status["next_due"]:
        shanghai = datetime.fromtimestamp(due[entry["avatar_id"]], SHANGHAI)
        assert entry["due_at"] == shanghai.strftime(TIME_FORMAT)
    runs = [(r["fire_time"], r["status"], r["success"], r["failure"]) for r in status["diary_runs"]]
    assert runs == [("2030-01-02 22:00:00", "running", 2, 0), ("2030-01-01 22:00:00", "done", 8, 1)]
    assert status["service"]["state"] == "degraded"
    assert status["service"]["http_status"] == 503
    assert status["service"]["problems"] == ["down: worker[2]"]


def test_status_lists_only_as_many_next_due_avatars_as_asked(populated: OpsEnv) -> None:
    result = invoke("status", "-f", str(populated.config_path), "--json", "--next", "2")

    assert [entry["avatar_id"] for entry in json.loads(result.stdout)["next_due"]] == [2, 1]


def test_status_text_shows_every_section_and_a_service_that_is_up(
    populated: OpsEnv, health: Callable[[list[str]], int]
) -> None:
    path = populated.write_config("up.yaml", prometheus=("127.0.0.1", health([])))

    done = run_cli("status", "-f", str(path))

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert "avatars:      active 6, paused 3, disabled 1" in lines
    assert "auto-paused:  1" in lines
    assert "queues:       due 5, overdue 2, inflight 1, ready 1" in lines
    assert "next due (UTC):" in lines
    assert "diary runs:" in lines
    assert lines[-1].startswith("service: up (http://127.0.0.1:")


def test_status_shows_what_is_degraded_under_a_service_that_is_up(
    ops: OpsEnv, health: Callable[[list[str]], int]
) -> None:
    degraded = ["degraded: action: 3 deadlines in a row", "degraded: etcd: unreachable"]
    path = ops.write_config("degraded.yaml", prometheus=("127.0.0.1", health(degraded)))

    text = run_cli("status", "-f", str(path))
    as_json = invoke("status", "-f", str(path), "--json")

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[-3].startswith("service: up (http://127.0.0.1:")
    assert lines[-2:] == [f"  {line}" for line in degraded]
    service = json.loads(as_json.stdout)["service"]
    assert (service["state"], service["http_status"]) == ("up", 200)
    assert service["problems"] == degraded


def test_status_says_the_service_is_not_reachable_when_nothing_answers(ops: OpsEnv) -> None:
    path = ops.write_config("down.yaml", prometheus=("127.0.0.1", free_port()))

    result = invoke("status", "-f", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("service: not reachable")
    assert "(none)" in result.stdout  # no avatar is due


def test_status_without_prometheus_host_says_the_service_is_not_configured(ops: OpsEnv) -> None:
    result = invoke("status", "-f", str(ops.config_path), "--json")

    assert json.loads(result.stdout)["service"] == {"state": "not configured", "url": None}


def test_status_with_redis_unreachable_exits_1_with_one_error_line(ops: OpsEnv) -> None:
    path = ops.write_config("no-redis.yaml", redis_host=f"127.0.0.1:{free_port()}")

    done = run_cli("status", "-f", str(path), "--json")

    assert done.returncode == 1
    assert done.stdout == ""
    assert "redis" in assert_one_error_line(done.stderr).lower()
