"""``avatar ...`` against the Scheduler gRPC server in-process, on real MariaDB and Redis."""

from __future__ import annotations

import json

from me2_devkit.testing.servers import free_port

from .fixtures_ops import OpsEnv, assert_one_error_line, invoke, run_cli


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
    columns = "id trigger outcome planned_time started_time finished_time lag_seconds"
    assert header.split() == [*columns.split(), "action_type", "action_id", "error"]
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
