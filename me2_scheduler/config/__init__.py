"""The service configuration: one frozen, typed object loaded from go-zero-shaped YAML.

Keys are go-zero's (``ListenOn``, ``Mysql.DataSource``, ``Schedule.MaxWorkers``);
every key this rewrite adds has a default, so the seed's ``scheduler-dev.yaml``
loads unchanged. ``load_config`` raises ``ConfigError(key_path, problem)``.

- ``sections``: the dataclasses; each field declares its key and bounds once
  with ``schema.setting``.
- ``goconf``: go-zero's ``conf.Load`` with ``conf.UseEnv()``: ``${VAR}``
  expanded, keys case-insensitive, unknown keys ignored, strict types.
- ``rules``: what one value must be; ``relations``: rules between values and
  the DiaryRpc derived from ActionRpc.
- ``load``: ``load_config``, ``validate``; ``display``: ``describe`` (for
  ``me2-scheduler check-config``, every secret masked) and ``rpc_source``.

The Go MySQL DSN is parsed by ``me2_scheduler.dsn.parse_dsn``.
"""

from __future__ import annotations

from me2_scheduler.config.display import describe, rpc_source
from me2_scheduler.config.load import load_config, service_timezone, validate
from me2_scheduler.config.relations import DIARY_RPC_KEY
from me2_scheduler.config.sections import (
    DEFAULT_CRON,
    DEFAULT_MAX_MSG_SIZE,
    ActionScheduleConf,
    Config,
    ConsoleConf,
    DiaryScheduleConf,
    EtcdConf,
    HistoryConf,
    LogConf,
    MysqlConf,
    PrometheusConf,
    RedisConf,
    RpcClientConf,
    ScheduleConf,
)
from me2_scheduler.dsn import MysqlDsn, parse_dsn
from me2_scheduler.errors import ConfigError

__all__ = [
    "DEFAULT_CRON",
    "DEFAULT_MAX_MSG_SIZE",
    "DIARY_RPC_KEY",
    "ActionScheduleConf",
    "Config",
    "ConfigError",
    "ConsoleConf",
    "DiaryScheduleConf",
    "EtcdConf",
    "HistoryConf",
    "LogConf",
    "MysqlConf",
    "MysqlDsn",
    "PrometheusConf",
    "RedisConf",
    "RpcClientConf",
    "ScheduleConf",
    "describe",
    "load_config",
    "parse_dsn",
    "rpc_source",
    "service_timezone",
    "validate",
]
