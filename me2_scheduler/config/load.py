"""Loading: go-zero's ``conf.Load`` with ``conf.UseEnv()``, then the derived values, then checks.

``load_config`` reads, builds (see ``goconf``), fills what is derived (the
parsed DSN, the default cron, DiaryRpc) and validates, raising
``ConfigError(key_path, problem)`` for any problem.
"""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo

from me2_scheduler.config.goconf import build, read_yaml
from me2_scheduler.config.relations import check_relations, derive_diary_rpc
from me2_scheduler.config.rules import check_fields
from me2_scheduler.config.schema import yaml_key
from me2_scheduler.config.sections import DEFAULT_CRON, Config
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.errors import ConfigError
from me2_scheduler.timefmt import service_zone


def load_config(path: str) -> Config:
    """Load, expand ``${VAR}`` and validate a YAML file.

    Raises ``ConfigError(key_path, problem)`` for any problem, the file path
    being the key for whole-file ones (unreadable, empty, not YAML).
    """
    config = finish(build(Config, read_yaml(path), yaml_key))
    validate(config)
    return config


def finish(config: Config) -> Config:
    """Fill the derived values: the parsed DSN, the default cron, ``Local`` as "", DiaryRpc.

    Raises ``ConfigError`` keyed ``Mysql.DataSource`` when the DSN is missing or malformed.
    """
    if not config.mysql.data_source.strip():
        raise ConfigError("Mysql.DataSource", "is required (user:pass@tcp(host:port)/dbname)")
    cron = config.diary_schedule.cron_expression.strip() or DEFAULT_CRON
    schedule = config.schedule
    return replace(
        config,
        schedule=replace(schedule, max_in_flight=schedule.max_in_flight or schedule.max_workers),
        timezone="" if config.timezone == "Local" else config.timezone,
        mysql=replace(config.mysql, dsn=parse_dsn(config.mysql.data_source)),
        diary_schedule=replace(config.diary_schedule, cron_expression=cron),
        diary_rpc=derive_diary_rpc(config.diary_rpc, config.action_rpc),
    )


def validate(config: Config) -> None:
    """Check every value, then the rules between them.

    Raises ``ConfigError(key_path, problem)`` at the first problem.
    """
    check_fields(config)
    check_relations(config)


def service_timezone(config: Config) -> ZoneInfo:
    """The zone people read times in: ``Timezone``, else the server's local zone."""
    return service_zone(config.timezone)
