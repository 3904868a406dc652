"""Loading, validating and describing the go-zero-shaped YAML config."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from me2_scheduler.config import (
    DEFAULT_CRON,
    ActionScheduleConf,
    Config,
    DiaryScheduleConf,
    EtcdConf,
    MysqlConf,
    RpcClientConf,
    ScheduleConf,
    describe,
    load_config,
    rpc_source,
)
from me2_scheduler.config.goconf import expand_env
from me2_scheduler.dsn import MysqlDsn
from me2_scheduler.errors import ConfigError
from tests.fixtures_config import (
    BASE,
    DEV_YAML,
    REPO,
    SEED_DSN,
    TEST_YAML,
    key_paths,
    write,
)

# --- the seed and the example files ----------------------------------------------


def test_seed_yaml_loads_with_its_values_and_defaults_for_every_added_key() -> None:
    expected = Config(
        name="scheduler.rpc",
        mode="dev",
        listen_on="0.0.0.0:8008",
        etcd=EtcdConf(hosts=("127.0.0.1:2379",), key="scheduler.rpc"),
        mysql=MysqlConf(
            data_source=SEED_DSN,
            dsn=MysqlDsn(
                user="root",
                password="123456",
                host="127.0.0.1",
                port=3306,
                database="me2",
                charset="utf8mb4",
                parse_time=True,
                loc="UTC",
            ),
        ),
        action_rpc=RpcClientConf(etcd=EtcdConf(hosts=("127.0.0.1:2379",), key="action.rpc")),
        diary_rpc=RpcClientConf(
            etcd=EtcdConf(hosts=("127.0.0.1:2379",), key="diary.rpc"),
            derived_from="ActionRpc.Etcd",
        ),
        schedule=ScheduleConf(scan_interval=60, max_workers=10, max_in_flight=10),
        action_schedule=ActionScheduleConf(min_interval_hours=2, max_interval_hours=6),
        diary_schedule=DiaryScheduleConf(cron_expression="0 22 * * *"),
    )
    assert load_config(str(DEV_YAML)) == expected


def test_seed_yaml_keeps_the_seed_comments_verbatim() -> None:
    text = DEV_YAML.read_text(encoding="utf-8")
    assert "# 扫描间隔（秒），建议 60" in text
    assert 'CronExpression: "0 22 * * *"  # 每天 22:00 生成日记' in text


def test_test_yaml_loads_with_short_intervals_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ME2_TEST_MYSQL_PASS", "from-env")
    config = load_config(str(TEST_YAML))
    assert config.mysql.dsn.password == "from-env"
    assert config.mysql.dsn.timeout_s == 5.0
    assert config.schedule.poll_interval == 0.2
    assert config.action_schedule.max_interval_hours * 3600 < 10
    addresses = [config.listen_on, config.redis.host, config.prometheus.host]
    addresses += [*config.action_rpc.endpoints, *config.diary_rpc.endpoints]
    assert all(address.startswith("127.0.0.1") for address in addresses)


def test_test_yaml_spells_out_every_key_the_service_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ME2_TEST_MYSQL_PASS", raising=False)
    in_file = key_paths(yaml.safe_load(TEST_YAML.read_text(encoding="utf-8")))
    described = key_paths(yaml.safe_load(describe(load_config(str(TEST_YAML)))))
    # Etcd blocks of the RPC clients list only what a client needs.
    missing = {
        p for p in described - in_file if not p.startswith(("actionrpc.etcd.", "diaryrpc.etcd."))
    }
    assert missing == set()
    assert in_file - described == set()


# --- environment, key case, types --------------------------------------------------


def test_password_in_dsn_and_redis_pass_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASS", "db-secret")
    monkeypatch.setenv("REDIS_PASS", "redis-secret")
    monkeypatch.setenv("WORKERS", "7")
    path = write(
        tmp_path,
        {
            "Mysql": {"DataSource": "me2:${DB_PASS}@tcp(127.0.0.1:3306)/me2"},
            "Redis": {"Pass": "$REDIS_PASS"},
            "Schedule": {"MaxWorkers": "${WORKERS}"},
        },
    )
    text = path.read_text().replace(
        "'${WORKERS}'", "${WORKERS}"
    )  # unquoted: a number once expanded
    path.write_text(text)
    config = load_config(str(path))
    assert config.mysql.dsn.password == "db-secret"
    assert config.redis.password == "redis-secret"
    assert config.schedule.max_workers == 7


def test_unset_variable_expands_to_empty_and_keeps_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ME2_UNSET_VAR", raising=False)
    path = write(
        tmp_path,
        yaml.safe_dump(BASE) + "Redis:\n  Pass: ${ME2_UNSET_VAR}\n  Key: k$ME2_UNSET_VAR\n",
    )
    config = load_config(str(path))
    assert (config.redis.password, config.redis.key) == ("", "k")


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("a${X}b", "a1b"),
        ("a$X.b", "a1.b"),
        ("$X_Y", "2"),
        ("$X-Y", "1-Y"),
        ("${X_Y}", "2"),
        ("cost $", "cost $"),
        ("$$", ""),
        ("${}", ""),
        ("${X", "X"),
        ("$1x", "x"),
        ("a $ b", "a $ b"),
    ],
)
def test_env_expansion_follows_go_os_expand_env(text: str, expanded: str) -> None:
    assert expand_env(text, {"X": "1", "X_Y": "2"}) == expanded


def test_keys_match_case_insensitively(tmp_path: Path) -> None:
    text = (
        "name: svc.rpc\nMYSQL:\n  datasource: root:pw@tcp(127.0.0.1:3306)/me2\n"
        "actionrpc:\n  ENDPOINTS: [127.0.0.1:8007]\nschedule:\n  maxWORKERS: 3\n"
        "actionSchedule:\n  minintervalhours: 0.5\n  MAXINTERVALHOURS: 1.5\n"
    )
    config = load_config(str(write(tmp_path, text)))
    assert (config.name, config.mysql.dsn.database, config.schedule.max_workers) == (
        "svc.rpc",
        "me2",
        3,
    )
    assert config.action_rpc.endpoints == ("127.0.0.1:8007",)
    assert (
        config.action_schedule.min_interval_hours,
        config.action_schedule.max_interval_hours,
    ) == (0.5, 1.5)


def test_a_key_given_twice_in_different_case_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, {"Schedule": {"MaxWorkers": 3, "maxworkers": 4}})
    with pytest.raises(ConfigError, match="given twice") as caught:
        load_config(str(path))
    assert caught.value.key.lower() == "schedule.maxworkers"


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"Telemetry": {"Name": "x"}, "Schedule": {"Turbo": True, "MaxWorkers": 4}}
    )
    assert load_config(str(path)).schedule.max_workers == 4


def test_yes_and_on_stay_strings_as_in_go_zero(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(BASE) + "Redis:\n  Pass: yes\n  Key: on\n")
    config = load_config(str(path))
    assert (config.redis.password, config.redis.key) == ("yes", "on")


@pytest.mark.parametrize(
    ("override", "key", "problem"),
    [
        (
            {"Schedule": {"MaxWorkers": "ten"}},
            "Schedule.MaxWorkers",
            "expected an integer, got a string",
        ),
        (
            {"Schedule": {"MaxWorkers": 2.5}},
            "Schedule.MaxWorkers",
            "expected an integer, got a number",
        ),
        ({"Schedule": {"MaxWorkers": True}}, "Schedule.MaxWorkers", "got a boolean"),
        (
            {"Schedule": {"PollInterval": "fast"}},
            "Schedule.PollInterval",
            "expected a finite number",
        ),
        ({"Schedule": [1, 2]}, "Schedule", "expected a mapping, got a list"),
        ({"Redis": {"Pass": 123456}}, "Redis.Pass", "expected a string, got a number (quote it)"),
        ({"ActionRpc": {"Endpoints": "127.0.0.1:8007"}}, "ActionRpc.Endpoints", "expected a list"),
        ({"ActionRpc": {"Endpoints": ["127.0.0.1:8007", 8]}}, "ActionRpc.Endpoints[1]", "a string"),
        (
            {"ActionSchedule": {"MaxIntervalHours": float("inf")}},
            "ActionSchedule.MaxIntervalHours",
            "finite",
        ),
    ],
)
def test_wrong_type_is_a_config_error_naming_the_key(
    tmp_path: Path, override: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(write(tmp_path, override)))
    assert (caught.value.key, problem in caught.value.problem) == (key, True)


def test_type_error_never_echoes_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, {"Redis": {"Pass": ["hunter2-secret"]}})
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert "hunter2-secret" not in str(caught.value)


# --- defaults and derived values ------------------------------------------------------


def test_empty_cron_expression_means_the_seed_default(tmp_path: Path) -> None:
    path = write(tmp_path, {"DiarySchedule": {"CronExpression": ""}})
    assert load_config(str(path)).diary_schedule.cron_expression == DEFAULT_CRON == "0 22 * * *"


def test_fractional_hours_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"ActionSchedule": {"MinIntervalHours": 0.001, "MaxIntervalHours": 0.0015}}
    )
    assert load_config(str(path)).action_schedule == ActionScheduleConf(0.001, 0.0015)


def test_timezone_local_means_the_server_zone(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, {"Timezone": "Local"}))).timezone == ""


def test_log_encoding_defaults_to_json_as_go_zero_logx(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, {}))).log.encoding == "json"


@pytest.mark.parametrize("name", ["scheduler-demo.yaml", "scheduler-test.yaml"])
def test_the_demo_and_test_configs_log_plain_lines_people_read(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = REPO / "etc" / name
    for variable in re.findall(r"\$\{(DEMO_\w+)\}", path.read_text(encoding="utf-8")):
        monkeypatch.setenv(variable, "10000")  # scripts/demo.py sets the ports it started
    assert load_config(str(path)).log.encoding == "plain"


ACTION_ETCD = {
    "Hosts": ["10.0.0.1:2379", "10.0.0.2:2379"],
    "Key": "action.rpc",
    "User": "me2",
    "Pass": "etcd-pw",
}


def test_diary_rpc_without_a_service_is_diary_rpc_in_action_rpcs_etcd_with_its_account_and_tls(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "etcd-ca.pem"
    ca.write_text("not read until a channel is made")
    action = {"Endpoints": None, "Etcd": {**ACTION_ETCD, "ID": 9, "CACertFile": str(ca)}}
    diary = {"Timeout": 60000, "App": "scheduler"}  # a section that names no service
    config = load_config(str(write(tmp_path, {"ActionRpc": action, "DiaryRpc": diary})))
    assert config.diary_rpc.etcd == EtcdConf(
        hosts=("10.0.0.1:2379", "10.0.0.2:2379"),
        key="diary.rpc",
        user="me2",
        password="etcd-pw",
        ca_file=str(ca),
    )
    assert (config.diary_rpc.timeout_ms, config.diary_rpc.app) == (60000, "scheduler")
    assert rpc_source(config.diary_rpc) == (
        "etcd diary.rpc on 10.0.0.1:2379,10.0.0.2:2379 (derived from ActionRpc.Etcd)"
    )


def test_a_diary_etcd_key_given_without_hosts_is_looked_up_in_action_rpcs_etcd(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        {
            "ActionRpc": {"Endpoints": None, "Etcd": ACTION_ETCD},
            "DiaryRpc": {"Etcd": {"Key": "me2.diary.rpc"}},
        },
    )
    etcd = load_config(str(path)).diary_rpc.etcd
    assert (etcd.hosts, etcd.key) == (("10.0.0.1:2379", "10.0.0.2:2379"), "me2.diary.rpc")


@pytest.mark.parametrize(
    ("diary", "source"),
    [
        ({"Endpoints": ["127.0.0.1:8009"]}, "endpoints 127.0.0.1:8009"),
        ({"Target": "dns:///diary:8009"}, "target dns:///diary:8009"),
        ({"Etcd": {"Hosts": ["10.0.0.9:2379"], "Key": "d.rpc"}}, "etcd d.rpc on 10.0.0.9:2379"),
    ],
)
def test_a_diary_rpc_that_names_its_service_is_used_as_given(
    tmp_path: Path, diary: dict[str, Any], source: str
) -> None:
    path = write(
        tmp_path, {"ActionRpc": {"Endpoints": None, "Etcd": ACTION_ETCD}, "DiaryRpc": diary}
    )
    config = load_config(str(path))
    assert rpc_source(config.diary_rpc) == source
    assert config.diary_rpc.derived_from == ""


def test_without_action_rpc_etcd_an_absent_diary_rpc_is_shown_as_not_configured(
    tmp_path: Path,
) -> None:
    config = load_config(str(write(tmp_path, {})))  # ActionRpc by Endpoints
    assert config.diary_rpc == RpcClientConf()
    assert "\nDiaryRpc:  # not configured\n" in describe(config)


def test_config_is_frozen() -> None:
    config = load_config(str(DEV_YAML))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.schedule.max_workers = 99  # type: ignore[misc]
