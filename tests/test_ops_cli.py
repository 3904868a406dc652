"""``status``, ``prune-history`` and ``avatar ...`` on real MariaDB, Redis and gRPC servers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from me2_devkit.simulators import ActionSimulator, serve
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.config import PrometheusConf, RpcClientConf
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.ops import index_ops
from me2_scheduler.ops.prune import cutoff, parse_age, prune
from me2_scheduler.ops.status import SECTIONS
from me2_scheduler.rpc_server.server import build_server
from me2_scheduler.rpc_server.servicer import SchedulerServicer
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.supervisor.http import StatusServer
from me2_scheduler.timefmt import TIME_FORMAT
from tests.ops_fixtures import OpsEnv, assert_one_error_line, epoch, invoke, ops_env, run_cli

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def ops(
    tmp_path: Path, mariadb: MariaDBServer, redis_server: RedisServer, database: str, redis_key: str
) -> Iterator[OpsEnv]:
    with ops_env(tmp_path, mariadb, redis_server, database, redis_key) as env:
        yield env


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# -- status ------------------------------------------------------------------------------


@pytest.fixture
def health(tmp_path: Path) -> Iterator[Callable[[list[str]], int]]:
    """Start the supervisor's real ``/healthz`` server reporting the given problems."""
    servers: list[StatusServer] = []

    def start(problems: list[str]) -> int:
        conf = PrometheusConf(host="127.0.0.1", port=0)
        servers.append(StatusServer(conf, str(tmp_path), lambda: problems))
        return servers[-1].port

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def populated(ops: OpsEnv) -> OpsEnv:
    """Six active avatars (two overdue, one in flight), three paused (one by failures),
    one disabled, a ready entry and two diary runs."""
    now = utc_now()
    hour = timedelta(hours=1)
    ops.insert_schedules(
        [(1, "active", now - hour, None), (2, "active", now - 2 * hour, None)]
        + [(i, "active", now + timedelta(hours=i), None) for i in (3, 4, 5, 6)]
        + [(7, "paused", now, "user"), (8, "paused", now, "user"), (9, "paused", now, "failures")]
        + [(10, "disabled", now, None)]
    )  # fmt: skip
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


# -- prune-history ---------------------------------------------------------------------


def insert_history(ops: OpsEnv, started: datetime, count: int) -> list[int]:
    """``count`` history rows started at ``started``; returns their ids."""
    naive = started.astimezone(timezone.utc).replace(tzinfo=None)
    first = ops.sql("SELECT COALESCE(MAX(id), 0) FROM avatar_schedule_history")[0][0]
    values = ", ".join(["(%s, 'auto', %s, 'success')"] * count)
    params = [value for avatar_id in range(1, count + 1) for value in (avatar_id, naive)]
    ops.sql(
        "INSERT INTO avatar_schedule_history (avatar_id, `trigger`, started_time, outcome)"
        f" VALUES {values}",
        *params,
    )
    return [
        row[0] for row in ops.sql("SELECT id FROM avatar_schedule_history WHERE id > %s", first)
    ]


def history_ids(ops: OpsEnv) -> list[int]:
    return [row[0] for row in ops.sql("SELECT id FROM avatar_schedule_history ORDER BY id")]


def test_prune_history_deletes_exactly_the_rows_older_than_the_age(ops: OpsEnv) -> None:
    now = utc_now()
    insert_history(ops, now - timedelta(days=40), 250)
    kept = insert_history(ops, now - timedelta(days=29), 30)
    kept += insert_history(ops, now - timedelta(hours=1), 20)

    done = run_cli(
        "prune-history", "-f", str(ops.config_path), "--older-than", "30d", "--batch", "100"
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("deleted 250 history rows started before ")
    assert history_ids(ops) == sorted(kept)


def test_prune_commits_each_batch_before_the_next_one_starts(ops: OpsEnv) -> None:
    insert_history(ops, utc_now() - timedelta(days=40), 250)
    before = cutoff(timedelta(days=30))
    seen_by_another_connection: list[int] = []

    def batch_done(deleted: int) -> None:
        (count,) = ops.sql("SELECT COUNT(*) FROM avatar_schedule_history")[0]
        seen_by_another_connection.append(count)

    deleted = prune(ops.store, before, batch=100, progress=batch_done)

    assert deleted == 250
    assert seen_by_another_connection == [150, 50, 0]


def test_prune_history_json_and_a_dry_table_delete_nothing(ops: OpsEnv) -> None:
    kept = insert_history(ops, utc_now() - timedelta(days=2), 5)

    result = invoke("prune-history", "-f", str(ops.config_path), "--older-than", "3d", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deleted"] == 0
    assert history_ids(ops) == kept


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30d", timedelta(days=30)),
        ("1.5d", timedelta(hours=36)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_an_age_is_days_hours_or_a_go_duration(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["30", "d", "30x", "0d", "0", "-1h", "1w", ""])
def test_an_age_that_is_not_a_positive_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_age(text)


def test_prune_history_with_a_bad_age_is_a_usage_error(ops: OpsEnv) -> None:
    result = invoke("prune-history", "-f", str(ops.config_path), "--older-than", "30x")

    assert result.exit_code == 2
    assert "--older-than" in result.stderr


def test_prune_history_with_mysql_unreachable_exits_1_with_one_error_line(ops: OpsEnv) -> None:
    path = ops.write_config(
        "no-mysql.yaml", data_source=f"root@tcp(127.0.0.1:{free_port()})/x?parseTime=true"
    )

    done = run_cli("prune-history", "-f", str(path), "--older-than", "30d")

    assert done.returncode == 1
    assert "MySQL" in assert_one_error_line(done.stderr)


# -- avatar --------------------------------------------------------------------------------


@pytest.fixture
def api(ops: OpsEnv) -> Iterator[str]:
    """The Scheduler gRPC server in-process (with an Action simulator); yields its address."""
    simulator = serve(ActionSimulator(seed=7), "127.0.0.1:0")
    config = replace(
        ops.config,
        listen_on="127.0.0.1:0",
        action_rpc=RpcClientConf(endpoints=(simulator.address,), timeout_ms=5000),
    )
    store, index, action = (
        MysqlStore(config.mysql),
        DelayIndex(config.redis),
        ActionClient(config.action_rpc),
    )
    servicer = SchedulerServicer(config, store, index, Dispatcher(config, store, index, action))
    rpc = build_server(config, servicer, max_workers=4)
    rpc.start()
    try:
        yield f"127.0.0.1:{rpc.port}"
    finally:
        rpc.stop(grace=0)
        action.close()
        simulator.stop(grace=0)
        index.close()
        store.close()


def avatar_json(target: str, *args: str) -> dict:
    result = invoke("avatar", *args, "--target", target, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def status_of(ops: OpsEnv, avatar_id: int) -> str:
    return ops.sql("SELECT status FROM avatar_schedules WHERE avatar_id = %s", avatar_id)[0][0]


def test_avatar_enable_creates_the_schedule_and_prints_its_info(ops: OpsEnv, api: str) -> None:
    result = invoke("avatar", "enable", "42", "--target", api)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["code     0", "message  success"]
    assert "avatar_id           42" in lines
    assert "status              active" in lines
    assert status_of(ops, 42) == "active"


def test_avatar_get_json_is_the_response_in_proto_field_names(ops: OpsEnv, api: str) -> None:
    invoke("avatar", "enable", "42", "--target", api)

    response = avatar_json(api, "get", "42")

    assert response["code"] == 0
    assert response["info"]["avatar_id"] == 42
    assert response["info"]["status"] == "active"
    assert response["info"]["failed_count"] == 0
    assert response["info"]["last_schedule_time"] == ""


def test_avatar_pause_resume_and_disable_change_the_state(ops: OpsEnv, api: str) -> None:
    avatar_json(api, "enable", "7")

    assert avatar_json(api, "pause", "7")["code"] == 0
    assert status_of(ops, 7) == "paused"
    assert avatar_json(api, "get", "7")["info"]["status"] == "paused"
    assert avatar_json(api, "resume", "7")["info"]["status"] == "active"
    assert avatar_json(api, "disable", "7")["info"]["status"] == "disabled"
    assert status_of(ops, 7) == "disabled"


def test_avatar_trigger_then_history_pages_through_the_dispatches(ops: OpsEnv, api: str) -> None:
    avatar_json(api, "enable", "9")
    first = avatar_json(api, "trigger", "9")
    avatar_json(api, "trigger", "9")

    assert first["action_type"] != ""
    page = avatar_json(api, "history", "9", "--limit", "1")
    assert [(e["trigger"], e["outcome"]) for e in page["entries"]] == [("manual", "success")]
    assert page["next_cursor"] == page["entries"][0]["id"]
    older = avatar_json(api, "history", "9", "--limit", "1", "--cursor", str(page["next_cursor"]))
    assert older["entries"][0]["id"] < page["entries"][0]["id"]
    assert older["entries"][0]["action_id"] == first["action_id"]


def test_avatar_history_text_is_a_table_of_entries(ops: OpsEnv, api: str) -> None:
    avatar_json(api, "enable", "9")
    avatar_json(api, "trigger", "9")

    result = invoke("avatar", "history", "9", "--target", api)

    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if line.startswith("id "))
    assert header.split() == [
        "id", "trigger", "outcome", "planned_time", "started_time", "finished_time",
        "lag_seconds", "action_type", "action_id", "error",
    ]  # fmt: skip
    assert " manual " in result.stdout


def test_avatar_get_of_an_unknown_avatar_exits_1_with_the_404_message(api: str) -> None:
    done = run_cli("avatar", "get", "404404", "--target", api)

    assert done.returncode == 1
    assert done.stdout == ""
    assert assert_one_error_line(done.stderr).startswith("error: code 404: ")


def test_avatar_json_of_a_refused_call_still_prints_the_response(api: str) -> None:
    result = invoke("avatar", "pause", "404404", "--target", api, "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == 404
    assert result.stderr.startswith("error: code 404: ")


def test_avatar_target_defaults_to_listen_on_of_the_config(ops: OpsEnv, api: str) -> None:
    port = api.rpartition(":")[2]
    path = ops.write_config("listen.yaml", listen_on=f"0.0.0.0:{port}")

    result = invoke("avatar", "enable", "5", "-f", str(path))

    assert result.exit_code == 0, result.output
    assert status_of(ops, 5) == "active"


def test_avatar_with_the_server_unreachable_exits_1_with_one_error_line() -> None:
    done = run_cli("avatar", "get", "1", "--target", f"127.0.0.1:{free_port()}")

    assert done.returncode == 1
    assert "not reachable" in assert_one_error_line(done.stderr)


def test_avatar_without_target_or_config_is_a_usage_error() -> None:
    result = invoke("avatar", "get", "1")

    assert result.exit_code == 2
    assert "--target" in result.stderr
