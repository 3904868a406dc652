"""``avatar policy get|set``, ``policy preview`` and ``policy set-many`` against the Scheduler
gRPC server in-process, on real MariaDB and Redis."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result
from prometheus_client import REGISTRY

from me2_devkit.testing.servers import free_port
from me2_scheduler.schedule_policy import in_window, parse_policy

from .fixtures_ops import OpsEnv, assert_one_error_line, invoke, run_cli

EVENINGS = {
    "time_zone": "Asia/Shanghai",
    "windows": [{"start": "18:00", "end": "23:00", "days": ["mon", "tue", "wed", "thu", "fri"]}],
    "day_rates": {"sat": 2, "sun": 2},
}
EVENING_OPTIONS = (
    *("--time-zone", "Asia/Shanghai"),
    *("--window", "18:00-23:00@mon-fri"),
    *("--day-rate", "sat-sun=2"),
)


def enable(api: str, *avatar_ids: int) -> None:
    for avatar_id in avatar_ids:
        assert invoke("avatar", "enable", str(avatar_id), "--target", api).exit_code == 0


def policy_json(api: str, *args: str) -> dict:
    result = invoke(*args, "--target", api, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_line(result: Result | subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The one ``error: ...`` line of a command (in-process or real) that exited ``exit_code``."""
    got = result.exit_code if isinstance(result, Result) else result.returncode
    assert got == exit_code, result.stderr
    return assert_one_error_line(result.stderr)


def rpc_count(method: str) -> float:
    labels = {"method": method, "code": "0"}
    return REGISTRY.get_sample_value("scheduler_rpc_requests_total", labels) or 0


# -- avatar policy get | set --------------------------------------------------------------


def test_avatar_policy_set_from_options_reads_back_as_the_same_json(ops: OpsEnv, api: str) -> None:
    enable(api, 42)

    set_answer = policy_json(api, "avatar", "policy", "set", "42", *EVENING_OPTIONS)
    got = policy_json(api, "avatar", "policy", "get", "42")

    assert set_answer["code"] == 0
    assert parse_policy(got["policy"]) == parse_policy(set_answer["policy"])
    assert parse_policy(got["policy"]) == parse_policy(EVENINGS)
    assert got["is_default"] is False
    assert got["effective_time_zone"] == "Asia/Shanghai"
    assert got["summary"] == set_answer["info"]["policy"]


def test_the_text_of_avatar_policy_get_is_a_file_avatar_policy_set_takes(
    ops: OpsEnv, api: str, tmp_path: Path
) -> None:
    enable(api, 42, 43)
    policy_json(api, "avatar", "policy", "set", "42", *EVENING_OPTIONS)

    shown = invoke("avatar", "policy", "get", "42", "--target", api)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert "is_default                    False" in lines
    copied = "\n".join(lines[lines.index("policy:") + 1 :])
    policy_file = write(tmp_path, "p.json", copied)
    result = invoke("avatar", "policy", "set", "43", "--file", policy_file, "--target", api)

    assert result.exit_code == 0, result.output
    assert parse_policy(policy_json(api, "avatar", "policy", "get", "43")["policy"]) == (
        parse_policy(EVENINGS)
    )


def test_avatar_policy_set_default_goes_back_to_the_service_default(ops: OpsEnv, api: str) -> None:
    enable(api, 42)
    policy_json(api, "avatar", "policy", "set", "42", "--min-hours", "3")
    answer = policy_json(api, "avatar", "policy", "set", "42", "--default")
    assert answer["info"]["policy"] == "always active"
    assert policy_json(api, "avatar", "policy", "get", "42")["is_default"] is True


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("{not json", "not a JSON document"),
        ("[1, 2]", "a policy is a JSON object"),
        ('{"windows": [{"start": "25:00", "end": "08:00"}]}', "windows[0].start: "),
        ('{"windowz": []}', "windowz: is not a policy field"),
    ],
)
def test_a_policy_file_that_cannot_be_read_exits_2_naming_file_and_field(
    ops: OpsEnv, api: str, tmp_path: Path, text: str, wanted: str
) -> None:
    enable(api, 42)
    path = write(tmp_path, "policy.json", text)
    result = run_cli("avatar", "policy", "set", "42", "--file", path, "--target", api)

    line = error_line(result, 2)
    assert line.startswith(f"error: {path}: ") and wanted in line, line
    assert ops.sql("SELECT COUNT(*) FROM avatar_schedule_policies") == [(0,)]


SET_42 = ("avatar", "policy", "set", "42")
SET_MANY = ("policy", "set-many", "--default")


@pytest.mark.parametrize(
    ("command", "options", "wanted"),
    [
        (SET_42, ("--window", "8am to 11pm"), "--window '8am to 11pm': write START-END[@DAYS]"),
        (SET_42, ("--window", "8-23"), 'windows[0].start: "8" is not a time HH:MM or HH:MM:SS'),
        (SET_42, ("--window", "08:00-23:00@someday"), "'someday' is not a day"),
        (SET_42, ("--day-rate", "sat"), "--day-rate 'sat': write DAYS=RATE"),
        (SET_42, ("--quiet-date", "christmas"), "quiet_dates[0]: "),
        (SET_MANY, ("--ids", "1,x,3"), "--ids line 1: 'x' is not a positive id"),
        (SET_MANY, ("--ids", "1,-3"), "'-3' is not a positive id"),
        (SET_MANY, ("--ids", " , "), "--ids: no avatar id in it"),
    ],
)
def test_options_that_cannot_be_read_exit_2_with_one_line(
    ops: OpsEnv, api: str, command: tuple[str, ...], options: tuple[str, ...], wanted: str
) -> None:
    enable(api, 42)
    result = invoke(*command, *options, "--target", api)
    assert wanted in error_line(result, 2)


def test_a_policy_the_server_refuses_exits_1_with_its_code_and_message(
    ops: OpsEnv, api: str
) -> None:
    enable(api, 42)
    result = invoke("avatar", "policy", "set", "42", "--min-hours", "9", "--target", api)
    assert error_line(result, 1).startswith("error: code 400: min_interval_hours: ")

    missing = invoke("avatar", "policy", "get", "404", "--target", api)
    assert error_line(missing, 1).startswith("error: code 404: ")


@pytest.mark.parametrize(
    "options",
    [(), ("--default", "--window", "08:00-09:00"), ("--file", "x.json", "--default")],
)
def test_set_needs_the_policy_given_exactly_once(
    ops: OpsEnv, api: str, options: tuple[str, ...]
) -> None:
    result = invoke("avatar", "policy", "set", "42", *options, "--target", api)
    assert result.exit_code == 2
    assert "give the policy once" in result.stderr


def test_an_unreachable_server_is_one_error_line_and_exit_1(ops: OpsEnv) -> None:
    target = f"127.0.0.1:{free_port()}"
    result = run_cli("avatar", "policy", "get", "1", "--target", target, "--timeout", "2")
    assert target in error_line(result, 1)


# -- policy preview -----------------------------------------------------------------------


def test_preview_prints_the_next_draws_inside_the_windows_in_the_avatars_zone(
    ops: OpsEnv, api: str
) -> None:
    enable(api, 42)
    policy_json(api, "avatar", "policy", "set", "42", *EVENING_OPTIONS)
    began = datetime.now(timezone.utc)

    shown = policy_json(api, "policy", "preview", "--avatar", "42", "--count", "12")

    draws = [datetime.fromisoformat(text) for text in shown["draws"]]
    assert len(draws) == 12 and shown["time_zone"] == "Asia/Shanghai"
    assert all(d.utcoffset() == timedelta(hours=8) for d in draws)  # in the avatar's zone
    assert draws == sorted(draws) and draws[0] > began
    chosen = parse_policy(EVENINGS)
    assert all(in_window(d, chosen, ZoneInfo("Asia/Shanghai")) for d in draws)


def test_preview_as_text_numbers_each_draw_and_repeats_with_a_seed(ops: OpsEnv, api: str) -> None:
    enable(api, 42)
    first = invoke(
        "policy", "preview", "--avatar", "42", "--count", "3", "--seed", "9", "--target", api
    )
    again = policy_json(api, "policy", "preview", "--avatar", "42", "--count", "3", "--seed", "9")

    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0] == "avatar 42: always active"
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3"]
    # The same seed draws the same intervals (the start, now, moves on).
    gaps = [line.split()[-1] for line in lines[2:]]
    draws = [datetime.fromisoformat(d) for d in again["draws"]]
    start = datetime.fromisoformat(again["from"])
    seconds = [
        int((b - a).total_seconds()) for a, b in zip([start, *draws[:-1]], draws, strict=True)
    ]
    assert gaps == [f"+{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" for s in seconds]
    assert all(2 * 3600 <= s <= 6 * 3600 for s in seconds)


def test_preview_of_an_avatar_without_a_schedule_exits_1(ops: OpsEnv, api: str) -> None:
    result = invoke("policy", "preview", "--avatar", "5", "--target", api)
    assert error_line(result, 1).startswith("error: code 404: ")


# -- policy set-many ----------------------------------------------------------------------


def test_set_many_with_ids_sets_those_with_a_schedule_and_lists_the_rest(
    ops: OpsEnv, api: str
) -> None:
    enable(api, 1, 2, 3)
    result = invoke("policy", "set-many", "--ids", "1,2,3,99,2", *EVENING_OPTIONS, "--target", api)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("updated 3 of 4 avatars in 1 call(s);")
    assert result.stdout.splitlines()[1] == "1 id(s) without a schedule, skipped: 99"
    assert ops.sql("SELECT COUNT(*) FROM avatar_schedule_policies") == [(3,)]


def test_set_many_from_a_file_sends_one_call_per_thousand_ids(
    ops: OpsEnv, api: str, tmp_path: Path
) -> None:
    due = datetime.now(timezone.utc) + timedelta(hours=3)
    ops.insert_schedules((avatar_id, "active", due, None) for avatar_id in range(1, 2501))
    lines = (",".join(map(str, range(start, start + 50))) for start in range(1, 2501, 50))
    ids = write(tmp_path, "ids.txt", "# avatars of one zone\n" + "\n".join(lines))
    calls = rpc_count("SetSchedulePolicies")

    policy_file = write(tmp_path, "p.json", json.dumps(EVENINGS))
    done = policy_json(api, "policy", "set-many", "--ids-file", ids, "--file", policy_file)

    assert done == {
        "asked": 2500,
        "updated": 2500,
        "redrawn": done["redrawn"],
        "calls": 3,
        "missing_avatar_ids": [],
    }
    assert rpc_count("SetSchedulePolicies") == calls + 3
    assert ops.sql("SELECT COUNT(DISTINCT policy), COUNT(*) FROM avatar_schedule_policies") == [
        (1, 2500)
    ]


def test_set_many_needs_ids_given_exactly_once(ops: OpsEnv, api: str, tmp_path: Path) -> None:
    ids = write(tmp_path, "ids.txt", "1\n")
    for args in ((), ("--ids", "1", "--ids-file", ids)):
        result = invoke("policy", "set-many", *args, "--default", "--target", api)
        assert result.exit_code == 2
        assert "give the avatars once" in result.stderr


def test_set_many_refused_by_the_server_exits_1(ops: OpsEnv, api: str) -> None:
    enable(api, 1)
    result = invoke("policy", "set-many", "--ids", "1", "--max-hours", "1", "--target", api)
    assert error_line(result, 1).startswith("error: code 400: max_interval_hours")
