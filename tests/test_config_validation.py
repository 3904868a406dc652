"""Config validation: bad values through the real CLI, every declared rule, cron, describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from me2_scheduler.cli import cli
from me2_scheduler.config import (
    Config,
    describe,
    load_config,
)
from me2_scheduler.config.schema import walk
from me2_scheduler.errors import ConfigError
from tests.fixtures_config import (
    BASE,
    DEV_YAML,
    run_cli,
    write,
)

# --- validation through the real CLI ------------------------------------------------------

MISSING_FILE = object()
BAD_CONFIGS = [
    (
        "min-above-max",
        {"ActionSchedule": {"MinIntervalHours": 7, "MaxIntervalHours": 6}},
        "ActionSchedule.MinIntervalHours",
    ),
    (
        "zero-max-hours",
        {"ActionSchedule": {"MaxIntervalHours": 0}},
        "ActionSchedule.MaxIntervalHours",
    ),
    (
        "negative-min-hours",
        {"ActionSchedule": {"MinIntervalHours": -1}},
        "ActionSchedule.MinIntervalHours",
    ),
    ("no-workers", {"Schedule": {"MaxWorkers": 0}}, "Schedule.MaxWorkers"),
    ("sub-second-scan", {"Schedule": {"ScanInterval": 0.5}}, "Schedule.ScanInterval"),
    ("zero-poll", {"Schedule": {"PollInterval": 0}}, "Schedule.PollInterval"),
    ("zero-claim-batch", {"Schedule": {"ClaimBatch": 0}}, "Schedule.ClaimBatch"),
    ("zero-dispatch-batch", {"Schedule": {"DispatchBatch": 0}}, "Schedule.DispatchBatch"),
    ("huge-dispatch-batch", {"Schedule": {"DispatchBatch": 5000}}, "Schedule.DispatchBatch"),
    (
        "lease-not-above-action-timeout",
        {"Schedule": {"LeaseSeconds": 2}, "ActionRpc": {"Timeout": 2000}},
        "Schedule.LeaseSeconds",
    ),
    ("zero-retry-delay", {"Schedule": {"RetryDelaySeconds": 0}}, "Schedule.RetryDelaySeconds"),
    (
        "zero-max-failures",
        {"Schedule": {"MaxConsecutiveFailures": 0}},
        "Schedule.MaxConsecutiveFailures",
    ),
    ("redis-sentinel", {"Redis": {"Type": "sentinel"}}, "Redis.Type"),
    ("redis-empty-key", {"Redis": {"Key": ""}}, "Redis.Key"),
    ("redis-cluster-db", {"Redis": {"Type": "cluster", "DB": 2}}, "Redis.DB"),
    (
        "dsn-without-slash",
        {"Mysql": {"DataSource": "root:Sup3rS3cret@tcp(127.0.0.1:3306)me2"}},
        "Mysql.DataSource",
    ),
    (
        "dsn-bad-loc",
        {"Mysql": {"DataSource": "root:Sup3rS3cret@tcp(db)/me2?loc=Mars%2FOlympus"}},
        "Mysql.DataSource",
    ),
    ("no-datasource", {"Mysql": None}, "Mysql.DataSource"),
    ("listen-without-port", {"ListenOn": "0.0.0.0"}, "ListenOn"),
    ("listen-bad-port", {"ListenOn": "0.0.0.0:70000"}, "ListenOn"),
    ("timezone-not-iana", {"Timezone": "Mars/Olympus"}, "Timezone"),
    ("log-encoding", {"Log": {"Encoding": "xml"}}, "Log.Encoding"),
    ("log-level", {"Log": {"Level": "warn"}}, "Log.Level"),
    ("prometheus-port", {"Prometheus": {"Port": 0}}, "Prometheus.Port"),
    ("diary-concurrency", {"DiarySchedule": {"Concurrency": 0}}, "DiarySchedule.Concurrency"),
    ("diary-timeout", {"DiarySchedule": {"TimeoutSeconds": 0}}, "DiarySchedule.TimeoutSeconds"),
    ("negative-retention", {"History": {"RetentionDays": -1}}, "History.RetentionDays"),
    (
        "bad-cron",
        {"DiarySchedule": {"CronExpression": "0 25 * * *"}},
        "DiarySchedule.CronExpression",
    ),
    ("string-for-number", {"Schedule": {"MaxWorkers": "ten"}}, "Schedule.MaxWorkers"),
    ("list-for-map", {"Redis": ["127.0.0.1:6379"]}, "Redis"),
    ("action-unreachable", {"ActionRpc": None}, "ActionRpc"),
    (
        "etcd-bad-host",
        {"Etcd": {"Hosts": ["etcd-without-port"], "Key": "scheduler.rpc"}},
        "Etcd.Hosts[0]",
    ),
    ("bad-mode", {"Mode": "production"}, "Mode"),
    ("empty-file", "", None),
    ("comments-only", "# nothing here\n", None),
    ("top-level-list", "- Name: scheduler.rpc\n", None),
    ("yaml-syntax", "Name: [scheduler\nMysql: {\n", None),
    ("unreadable-file", MISSING_FILE, None),
]


@pytest.mark.parametrize(
    ("content", "key"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, content: Any, key: str | None
) -> None:
    path = tmp_path / "missing.yaml" if content is MISSING_FILE else write(tmp_path, content)
    result = run_cli("check-config", "-f", str(path))
    expected_key = key or str(path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"config error: {expected_key}: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert "Sup3rS3cret" not in result.stderr
    assert result.stdout == ""


def _nested(path: str, value: Any) -> dict[str, Any]:
    """``{"A": {"B": value}}`` for the key path ``A.B``."""
    tree: Any = value
    for key in reversed(path.split(".")):
        tree = {key: tree}
    return tree


def _declared_rules() -> list[tuple[str, Any, str]]:
    """(key path, a value just outside the rule, the problem) for every declared rule."""
    cases = []
    for item in walk(Config()):
        spec, step = item.spec, 1 if isinstance(item.value, int) else 0.5
        if spec.gt is not None:
            cases.append((item.path, spec.gt, "must "))
        if spec.ge is not None:
            cases.append((item.path, spec.ge - step, "must "))
        if spec.le is not None:
            cases.append((item.path, spec.le.value + step, f"must be at most {spec.le.value} ("))
        if spec.choices:
            cases.append((item.path, "nope", "must be one of " + "|".join(spec.choices)))
        if spec.non_empty:
            cases.append((item.path, " ", "must not be empty"))
    return cases


@pytest.mark.parametrize(("path", "value", "problem"), _declared_rules())
def test_every_declared_rule_is_checked_under_its_key_path(
    tmp_path: Path, path: str, value: Any, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(write(tmp_path, _nested(path, value))))
    assert caught.value.key == path
    assert caught.value.problem.startswith(problem)


RULED_KEYS = {
    "Name",
    "Mode",
    "Timeout",
    "MaxMsgSize",
    "Mysql.PoolSize",
    "Redis.Type",
    "Redis.Key",
    "Redis.DB",
    "ActionRpc.Timeout",
    "ActionRpc.MaxMsgSize",
    "DiaryRpc.Timeout",
    "DiaryRpc.MaxMsgSize",
    "Schedule.ScanInterval",
    "Schedule.MaxWorkers",
    "Schedule.MaxInFlight",
    "Schedule.PollInterval",
    "Schedule.ClaimBatch",
    "Schedule.DispatchBatch",
    "Schedule.LeaseSeconds",
    "Schedule.RetryDelaySeconds",
    "Schedule.MaxConsecutiveFailures",
    "Schedule.SweepGraceSeconds",
    "Schedule.ShutdownTimeoutSeconds",
    "ActionSchedule.MinIntervalHours",
    "ActionSchedule.MaxIntervalHours",
    "DiarySchedule.Concurrency",
    "DiarySchedule.TimeoutSeconds",
    "DiarySchedule.MisfireGraceSeconds",
    "DiarySchedule.StaleRunSeconds",
    "History.RetentionDays",
    "Log.Encoding",
    "Log.Level",
}


def test_the_declared_rules_cover_every_bounded_or_chosen_key() -> None:
    assert {path for path, _, _ in _declared_rules()} == RULED_KEYS


def test_a_tls_file_name_with_a_nul_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(BASE) + 'CACertFile: "ca\\0.pem"\n')
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_config(str(path))
    assert caught.value.key == "CACertFile"


def test_lease_error_says_it_must_exceed_the_action_timeout(tmp_path: Path) -> None:
    path = write(tmp_path, {"Schedule": {"LeaseSeconds": 3}, "ActionRpc": {"Timeout": 5000}})
    with pytest.raises(ConfigError, match=r"must exceed ActionRpc.Timeout \(5 s\)"):
        load_config(str(path))


def test_check_config_prints_the_effective_config_and_exits_0() -> None:
    result = run_cli("check-config", "-f", str(DEV_YAML))
    assert result.returncode == 0, result.stderr
    assert "  ScanInterval: 60\n" in result.stdout
    assert "  DataSource: root:******@tcp(127.0.0.1:3306)/me2" in result.stdout
    assert "123456" not in result.stdout


def test_check_config_shows_the_seeds_diary_rpc_found_in_action_rpcs_etcd() -> None:
    result = run_cli("check-config", "-f", str(DEV_YAML))
    assert result.returncode == 0, result.stderr
    described = yaml.safe_load(result.stdout)
    assert described["DiaryRpc"]["Etcd"]["Hosts"] == ["127.0.0.1:2379"]
    assert described["DiaryRpc"]["Etcd"]["Key"] == "diary.rpc"
    assert (
        "DiaryRpc:  # etcd diary.rpc on 127.0.0.1:2379 (derived from ActionRpc.Etcd)\n"
        in result.stdout
    )
    assert "ActionRpc:  # etcd action.rpc on 127.0.0.1:2379\n" in result.stdout


def test_check_config_in_process_reports_the_key_without_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["check-config", "-f", str(write(tmp_path, {"Log": {"Level": "x"}}))]
    )
    assert result.exit_code == 2
    assert "config error: Log.Level: must be one of debug|info|error|severe, got x" in result.output


# --- cron validation -------------------------------------------------------------------------


def cron_config(tmp_path: Path, expr: str) -> Path:
    return write(tmp_path, {"DiarySchedule": {"CronExpression": expr}})


@pytest.mark.parametrize("expr", ["0 22 * * *", "*/5 * * * *", "0 20 * * 1-5", "@daily"])
def test_valid_cron_expressions_pass(tmp_path: Path, expr: str) -> None:
    assert load_config(str(cron_config(tmp_path, expr))).diary_schedule.cron_expression == expr


@pytest.mark.parametrize("expr", ["0 25 * * *", "61 * * * *", "0 22 * *", "0 0 22 * * *", "daily"])
def test_invalid_cron_expressions_name_the_key(tmp_path: Path, expr: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(cron_config(tmp_path, expr)))
    assert caught.value.key == "DiarySchedule.CronExpression"


# --- describe and repr ----------------------------------------------------------------------

SECRETS = {
    "Mysql": {"DataSource": "me2:dsn-s3cret@tcp(127.0.0.1:3306)/me2"},
    "Redis": {"Pass": "redis-s3cret"},
    "Etcd": {"Pass": "etcd-s3cret"},
    "ActionRpc": {"Token": "action-s3cret", "Etcd": {"Pass": "action-etcd-s3cret"}},
    "DiaryRpc": {"Token": "diary-s3cret"},
}


def test_describe_and_repr_never_show_a_secret(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, SECRETS)))
    shown = describe(config) + repr(config)
    assert "s3cret" not in shown
    described = yaml.safe_load(describe(config))
    assert described["Redis"]["Pass"] == described["ActionRpc"]["Token"] == "******"
    assert described["Mysql"]["DataSource"] == "me2:******@tcp(127.0.0.1:3306)/me2"


def test_describe_reads_back_as_the_same_config(tmp_path: Path) -> None:
    override = {
        "Timezone": "Asia/Shanghai",
        "Redis": {"Key": "0 22 * * *"},
        "Mysql": {"DataSource": "root@tcp(127.0.0.1:3306)/me2?loc=Asia%2FTokyo"},
        "Schedule": {"PollInterval": 0.25},
        "DiarySchedule": {"CronExpression": "*/5 * * * *"},
        "ActionRpc": {"App": "yes", "Target": "dns:///action:8007"},
    }
    config = load_config(str(write(tmp_path, override)))
    again = tmp_path / "again.yaml"
    again.write_text(describe(config), encoding="utf-8")
    assert load_config(str(again)) == config


def test_max_in_flight_defaults_to_one_call_per_worker_the_seeds_semaphore(tmp_path: Path) -> None:
    path = write(tmp_path, {"Schedule": {"MaxWorkers": 7}})
    assert load_config(str(path)).schedule.max_in_flight == 7


def test_max_in_flight_may_hold_many_calls_per_worker(tmp_path: Path) -> None:
    path = write(tmp_path, {"Schedule": {"MaxWorkers": 10, "MaxInFlight": 400}})
    assert load_config(str(path)).schedule.max_in_flight == 400


def test_max_in_flight_below_the_workers_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, {"Schedule": {"MaxWorkers": 10, "MaxInFlight": 4}})
    with pytest.raises(ConfigError, match=r"at least Schedule\.MaxWorkers") as caught:
        load_config(str(path))
    assert caught.value.key == "Schedule.MaxInFlight"
