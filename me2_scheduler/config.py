"""The service configuration: one frozen, typed object loaded from go-zero-shaped YAML.

Keys are go-zero's (``ListenOn``, ``Mysql.DataSource``, ``Schedule.MaxWorkers``);
every key this rewrite adds has a default, so the seed's ``scheduler-dev.yaml``
loads unchanged. ``load_config`` raises ``ConfigError(key_path, problem)``.

Loading is go-zero's ``conf.Load`` with ``conf.UseEnv()`` (see ``goconf``):
``${VAR}`` expanded, keys case-insensitive, unknown keys ignored, strict types.
The Go MySQL DSN is parsed by ``dsn.parse_dsn``. ``describe`` prints the
effective config with every secret masked, for ``me2-scheduler check-config``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from me2_scheduler.dsn import MASK, MysqlDsn, local_zone_name, mask_dsn, parse_dsn, zone_exists
from me2_scheduler.errors import ConfigError
from me2_scheduler.goconf import build, parse_yaml, read_yaml
from me2_scheduler.timefmt import service_zone

__all__ = [
    "Config", "ConfigError", "MysqlDsn", "describe", "load_config", "parse_dsn", "rpc_source",
    "validate", "validate_cron",
]  # fmt: skip

DEFAULT_CRON = "0 22 * * *"
DIARY_RPC_KEY = "diary.rpc"  # the Diary service's etcd key when DiaryRpc is derived
DEFAULT_MAX_MSG_SIZE = 16 * 1024 * 1024  # bytes, each way, per gRPC message


@dataclass(frozen=True)
class MysqlConf:
    data_source: str = field(default="", repr=False)
    dsn: MysqlDsn = field(default_factory=MysqlDsn)
    pool_size: int = 8


@dataclass(frozen=True)
class RedisConf:
    host: str = "127.0.0.1:6379"  # "h:p", comma-separated seeds for a cluster
    type: str = "node"  # node | cluster
    password: str = field(default="", repr=False)
    key: str = "me2:scheduler"
    db: int = 0


@dataclass(frozen=True)
class EtcdConf:
    hosts: tuple[str, ...] = ()
    key: str = ""
    id: int = 0
    user: str = ""
    password: str = field(default="", repr=False)
    cert_file: str = ""
    cert_key_file: str = ""
    ca_file: str = ""
    insecure_skip_verify: bool = False  # go-zero's key; refused: gRPC cannot skip verification


@dataclass(frozen=True)
class RpcClientConf:
    """A downstream zrpc client: ``Endpoints`` > ``Target`` > ``Etcd``; TLS when a file is set."""

    endpoints: tuple[str, ...] = ()
    target: str = ""
    etcd: EtcdConf = field(default_factory=EtcdConf)
    timeout_ms: int = 2000
    app: str = ""
    token: str = field(default="", repr=False)
    ca_file: str = ""  # trust this CA (TLS on); else the system roots when CertFile is set
    cert_file: str = ""  # client certificate, for a server that wants mutual TLS
    key_file: str = ""
    max_msg_size: int = DEFAULT_MAX_MSG_SIZE
    derived_from: str = ""  # the key path this client's Etcd was taken from; never read from YAML


@dataclass(frozen=True)
class ScheduleConf:
    scan_interval: float = 60.0  # seconds between safety-net sweeps (the seed's scan)
    max_workers: int = 10
    poll_interval: float = 1.0  # seconds between claims of due avatars
    claim_batch: int = 500
    dispatch_batch: int = 32  # claims a worker takes at once and records in one transaction
    lease_seconds: float = 30.0
    retry_delay_seconds: float = 300.0
    max_consecutive_failures: int = 5
    sweep_grace_seconds: float = 30.0
    shutdown_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class ActionScheduleConf:
    min_interval_hours: float = 2.0
    max_interval_hours: float = 6.0


@dataclass(frozen=True)
class DiaryScheduleConf:
    cron_expression: str = DEFAULT_CRON
    concurrency: int = 1
    timeout_seconds: float = 60.0
    misfire_grace_seconds: float = 3600.0
    stale_run_seconds: float = 120.0


@dataclass(frozen=True)
class HistoryConf:
    retention_days: int = 30


@dataclass(frozen=True)
class PrometheusConf:
    host: str = ""  # served only when set, as go-zero
    port: int = 9101
    path: str = "/metrics"


@dataclass(frozen=True)
class LogConf:
    encoding: str = "json"  # json (go-zero's default) | plain
    level: str = "info"  # debug | info | error | severe


@dataclass(frozen=True)
class Config:
    name: str = "scheduler.rpc"
    mode: str = "pro"
    listen_on: str = "0.0.0.0:8008"
    timeout_ms: int = 2000  # server-side per-call deadline, as go-zero's RpcServerConf.Timeout
    timezone: str = ""  # IANA name for what people read; "" = the server's local zone
    etcd: EtcdConf = field(default_factory=EtcdConf)  # registration, when Hosts and Key are set
    auth: bool = False  # go-zero's app/token check: token = HGET <Redis.Key> <app>
    strict_control: bool = False  # Auth: an unknown app or a failed lookup is refused
    cert_file: str = ""  # TLS on when set, with key_file
    key_file: str = ""
    ca_file: str = ""  # clients must present a certificate signed by this CA (mutual TLS)
    max_msg_size: int = DEFAULT_MAX_MSG_SIZE
    mysql: MysqlConf = field(default_factory=MysqlConf)
    redis: RedisConf = field(default_factory=RedisConf)
    action_rpc: RpcClientConf = field(default_factory=RpcClientConf)
    diary_rpc: RpcClientConf = field(default_factory=RpcClientConf)
    schedule: ScheduleConf = field(default_factory=ScheduleConf)
    action_schedule: ActionScheduleConf = field(default_factory=ActionScheduleConf)
    diary_schedule: DiaryScheduleConf = field(default_factory=DiaryScheduleConf)
    history: HistoryConf = field(default_factory=HistoryConf)
    prometheus: PrometheusConf = field(default_factory=PrometheusConf)
    log: LogConf = field(default_factory=LogConf)


# --- go-zero key names -------------------------------------------------------

_KEY_OVERRIDES = {
    "timeout_ms": "Timeout", "password": "Pass", "ca_file": "CACertFile", "id": "ID", "db": "DB",
}  # fmt: skip
_DERIVED = frozenset({"dsn", "derived_from"})  # computed, never read from YAML


def _yaml_key(attr: str) -> str | None:
    """The go-zero key of a dataclass field (``max_workers`` → ``MaxWorkers``)."""
    if attr in _DERIVED:
        return None
    return _KEY_OVERRIDES.get(attr) or "".join(p.capitalize() for p in attr.split("_"))


def _value_at(config: Config, path: str) -> Any:
    """The value at a go-zero key path (``Schedule.MaxWorkers``)."""
    value: Any = config
    for key in path.split("."):
        value = next(getattr(value, f.name) for f in fields(value) if _yaml_key(f.name) == key)
    return value


def _finish(config: Config) -> Config:
    """Fill the derived values: the parsed DSN, the default cron, ``Local`` as "", DiaryRpc."""
    if not config.mysql.data_source.strip():
        raise ConfigError("Mysql.DataSource", "is required (user:pass@tcp(host:port)/dbname)")
    cron = config.diary_schedule.cron_expression.strip() or DEFAULT_CRON
    return replace(
        config,
        timezone="" if config.timezone == "Local" else config.timezone,
        mysql=replace(config.mysql, dsn=parse_dsn(config.mysql.data_source)),
        diary_schedule=replace(config.diary_schedule, cron_expression=cron),
        diary_rpc=_derive_diary_rpc(config.diary_rpc, config.action_rpc),
    )


def _derive_diary_rpc(diary: RpcClientConf, action: RpcClientConf) -> RpcClientConf:
    """``DiaryRpc`` as given, or, when it names no service, ``diary.rpc`` on ActionRpc's etcd.

    The seed's config has no DiaryRpc, yet its Diary service is registered in
    the same etcd as Action: the same hosts, account and TLS find it there.
    A ``DiaryRpc.Etcd.Key`` given without hosts is kept.
    """
    if diary.endpoints or diary.target.strip() or diary.etcd.hosts or not action.etcd.hosts:
        return diary
    etcd = replace(action.etcd, key=diary.etcd.key or DIARY_RPC_KEY, id=0)
    return replace(diary, etcd=etcd, derived_from="ActionRpc.Etcd")


def rpc_source(conf: RpcClientConf) -> str:
    """Where a client's calls go, for people: ``etcd diary.rpc on 10.0.0.1:2379``.

    Follows the clients' precedence, Endpoints > Target > Etcd (``endpoints
    h:p,...``, ``target T``, ``etcd KEY on HOSTS``); "" when none is set.
    """
    if conf.endpoints:
        return "endpoints " + ",".join(conf.endpoints)
    if conf.target.strip():
        return "target " + conf.target.strip()
    if not conf.etcd.hosts:
        return ""
    derived = f" (derived from {conf.derived_from})" if conf.derived_from else ""
    return f"etcd {conf.etcd.key} on {','.join(conf.etcd.hosts)}{derived}"


def load_config(path: str) -> Config:
    """Load, expand ``${VAR}`` and validate a YAML file.

    Raises ``ConfigError(key_path, problem)`` for any problem, the file path
    being the key for whole-file ones (unreadable, empty, not YAML).
    """
    config = _finish(build(Config, read_yaml(path), _yaml_key))
    validate(config)
    return config


def service_timezone(config: Config) -> ZoneInfo:
    """The zone people read times in: ``Timezone``, else the server's local zone."""
    return service_zone(config.timezone)


# --- validation ------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    ok: Callable[[Any], bool]
    text: str


def _at_least(n: int) -> _Check:
    return _Check(lambda v: v >= n, f"must be at least {n}")


def _one_of(*choices: str) -> _Check:
    return _Check(lambda v: v in choices, "must be one of " + "|".join(choices))


_POSITIVE = _Check(lambda v: v > 0, "must be positive")
_NOT_NEGATIVE = _Check(lambda v: v >= 0, "must not be negative")
_NOT_EMPTY = _Check(lambda v: bool(v.strip()), "must not be empty")
_POSITIVE_MS = _Check(lambda v: v > 0, "must be positive (milliseconds)")

_RULES: tuple[tuple[str, _Check], ...] = (
    ("Name", _NOT_EMPTY),
    ("Mode", _one_of("dev", "test", "rt", "pre", "pro")),
    ("Timeout", _Check(lambda v: v >= 0, "must not be negative (milliseconds; 0 = none)")),
    ("Mysql.PoolSize", _at_least(1)),
    ("Redis.Type", _one_of("node", "cluster")),
    ("Redis.Key", _NOT_EMPTY),
    ("Redis.DB", _NOT_NEGATIVE),
    ("MaxMsgSize", _POSITIVE),
    ("ActionRpc.MaxMsgSize", _POSITIVE),
    ("DiaryRpc.MaxMsgSize", _POSITIVE),
    ("ActionRpc.Timeout", _POSITIVE_MS),
    ("DiaryRpc.Timeout", _POSITIVE_MS),
    ("Schedule.ScanInterval", _Check(lambda v: v >= 1, "must be at least 1 (seconds)")),
    ("Schedule.MaxWorkers", _at_least(1)),
    ("Schedule.PollInterval", _Check(lambda v: v > 0, "must be positive (seconds)")),
    ("Schedule.ClaimBatch", _at_least(1)),
    ("Schedule.DispatchBatch", _at_least(1)),
    ("Schedule.LeaseSeconds", _POSITIVE),
    ("Schedule.RetryDelaySeconds", _POSITIVE),
    ("Schedule.MaxConsecutiveFailures", _at_least(1)),
    ("Schedule.SweepGraceSeconds", _NOT_NEGATIVE),
    ("Schedule.ShutdownTimeoutSeconds", _POSITIVE),
    ("ActionSchedule.MinIntervalHours", _POSITIVE),
    ("ActionSchedule.MaxIntervalHours", _POSITIVE),
    ("DiarySchedule.Concurrency", _at_least(1)),
    ("DiarySchedule.TimeoutSeconds", _POSITIVE),
    ("DiarySchedule.MisfireGraceSeconds", _NOT_NEGATIVE),
    ("DiarySchedule.StaleRunSeconds", _POSITIVE),
    ("History.RetentionDays", _NOT_NEGATIVE),
    ("Prometheus.Port", _Check(lambda v: 0 < v < 65536, "must be a port 1-65535")),
    ("Prometheus.Path", _Check(lambda v: v.startswith("/"), "must start with /")),
    ("Log.Encoding", _one_of("plain", "json")),
    ("Log.Level", _one_of("debug", "info", "error", "severe")),
)


# Upper bounds (found by tests/test_fuzz_config.py): past them a config loads
# but the service breaks at run time: timedelta, datetime or threading overflow
# on every dispatch or wait, or a supervisor forking workers without end.
_YEAR_S = 365 * 24 * 3600


def _at_most(limit: float, unit: str) -> _Check:
    return _Check(lambda v: v <= limit, f"must be at most {limit} ({unit})")


_SECONDS_KEYS = (
    "Schedule.ScanInterval", "Schedule.PollInterval", "Schedule.LeaseSeconds",
    "Schedule.RetryDelaySeconds", "Schedule.SweepGraceSeconds", "Schedule.ShutdownTimeoutSeconds",
    "DiarySchedule.TimeoutSeconds", "DiarySchedule.MisfireGraceSeconds",
    "DiarySchedule.StaleRunSeconds",
)  # fmt: skip
_RULES += (
    ("Timeout", _at_most(_YEAR_S * 1000, "milliseconds, one year")),
    ("ActionRpc.Timeout", _at_most(_YEAR_S * 1000, "milliseconds, one year")),
    ("DiaryRpc.Timeout", _at_most(_YEAR_S * 1000, "milliseconds, one year")),
    ("Schedule.MaxWorkers", _at_most(1000, "worker processes")),
    ("Schedule.DispatchBatch", _at_most(1000, "claims per transaction")),
    *((key, _at_most(_YEAR_S, "seconds, one year")) for key in _SECONDS_KEYS),
    ("ActionSchedule.MinIntervalHours", _at_most(24 * 365, "hours, one year")),
    ("ActionSchedule.MaxIntervalHours", _at_most(24 * 365, "hours, one year")),
    ("History.RetentionDays", _at_most(36500, "days, a century")),
)
_ADDRESS_LISTS = (
    "Etcd.Hosts", "ActionRpc.Endpoints", "ActionRpc.Etcd.Hosts", "DiaryRpc.Endpoints",
    "DiaryRpc.Etcd.Hosts",
)  # fmt: skip
CRON_KEY = "DiarySchedule.CronExpression"


def validate(config: Config) -> None:
    """Check every value and the rules between them; raise ``ConfigError`` at the first problem."""
    for path, check in _RULES:
        value = _value_at(config, path)
        if not check.ok(value):
            raise ConfigError(path, f"{check.text}, got {_scalar(value)}")
    rules = (_check_addresses, _check_etcd_keys, _check_tls, _check_relations, _check_timezone)
    for rule in rules:
        rule(config)
    validate_cron(config.diary_schedule.cron_expression)


def _check_host_port(path: str, address: str) -> None:
    bare = address.removeprefix("http://").removeprefix("https://") if "Etcd" in path else address
    host, colon, port = bare.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not colon or (":" in host and not bracketed):
        raise ConfigError(path, f"must be host:port, got {_scalar(address)}")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(path, f"the port must be 1-65535, got {_scalar(address)}")


def _check_addresses(config: Config) -> None:
    _check_host_port("ListenOn", config.listen_on)
    for seed in config.redis.host.split(","):
        _check_host_port("Redis.Host", seed.strip())
    for path in _ADDRESS_LISTS:
        for i, address in enumerate(_value_at(config, path)):
            _check_host_port(f"{path}[{i}]", address)


def _check_etcd_keys(config: Config) -> None:
    for path in _ETCD_PATHS:
        etcd = _value_at(config, path)
        if etcd.hosts and not etcd.key:
            raise ConfigError(f"{path}.Key", "must be set when Hosts is (the service name)")
    action = config.action_rpc
    if not (action.endpoints or action.target or action.etcd.hosts):
        raise ConfigError("ActionRpc", "needs Endpoints, Target or Etcd.Hosts to reach Action")


_ETCD_PATHS = ("Etcd", "ActionRpc.Etcd", "DiaryRpc.Etcd")
# (section, certificate key, key-file key, CA key): the files TLS reads, per section.
_TLS_FILES = (
    ("", "CertFile", "KeyFile", "CACertFile"),
    ("ActionRpc.", "CertFile", "KeyFile", "CACertFile"),
    ("DiaryRpc.", "CertFile", "KeyFile", "CACertFile"),
    *((f"{p}.", "CertFile", "CertKeyFile", "CACertFile") for p in _ETCD_PATHS),
)


def _check_tls(config: Config) -> None:
    """Certificates come with their keys, a server CA needs a server certificate, files read."""
    for section, cert_key, key_key, ca_key in _TLS_FILES:
        cert, key = (_value_at(config, section + k) for k in (cert_key, key_key))
        if bool(cert) != bool(key):
            missing = key_key if cert else cert_key
            raise ConfigError(
                section + missing, f"must be set with {section}{cert_key if cert else key_key}"
            )
        for k in (cert_key, key_key, ca_key):
            _check_readable(section + k, _value_at(config, section + k))
    if config.ca_file and not config.cert_file:
        raise ConfigError("CertFile", "must be set with CACertFile (mutual TLS needs server TLS)")
    for path in _ETCD_PATHS:
        if _value_at(config, f"{path}.InsecureSkipVerify"):
            raise ConfigError(
                f"{path}.InsecureSkipVerify",
                "is not supported (gRPC always verifies): give CACertFile instead",
            )


def _check_readable(path: str, file: str) -> None:
    if not file:
        return
    try:
        with open(file, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(path, f"cannot read {file}: {exc.strerror or exc}") from None


def _check_relations(config: Config) -> None:
    low, high = config.action_schedule.min_interval_hours, config.action_schedule.max_interval_hours
    if low > high:
        raise ConfigError(
            "ActionSchedule.MinIntervalHours",
            f"must not exceed MaxIntervalHours ({_scalar(high)}), got {_scalar(low)}",
        )
    lease, timeout_s = config.schedule.lease_seconds, config.action_rpc.timeout_ms / 1000
    if lease <= timeout_s:
        raise ConfigError(
            "Schedule.LeaseSeconds",
            f"must exceed ActionRpc.Timeout ({_scalar(timeout_s)} s), so that only a dead worker"
            f" lets a lease expire; got {_scalar(lease)}",
        )
    if config.redis.type == "cluster" and config.redis.db != 0:
        raise ConfigError("Redis.DB", "must be 0 with Redis.Type cluster (a cluster has only db 0)")


def _check_timezone(config: Config) -> None:
    if config.timezone and not zone_exists(config.timezone):
        raise ConfigError("Timezone", f"not an IANA time zone: {_scalar(config.timezone)}")


def validate_cron(expr: str) -> None:
    """Check a diary cron expression (robfig/cron's standard 5 fields); raise ``ConfigError``."""
    try:
        from me2_scheduler.cron import parse
    except ImportError:  # the cron module is optional here: fall back to croniter's grammar
        from croniter import croniter

        if not (croniter.is_valid(expr) and (expr.startswith("@") or len(expr.split()) == 5)):
            raise ConfigError(CRON_KEY, f"not a valid cron expression: {_scalar(expr)}") from None
        return
    try:
        parse(expr, ZoneInfo("UTC"))
    except ValueError as exc:
        raise ConfigError(CRON_KEY, str(exc)) from None


# --- describe ----------------------------------------------------------------------


def describe(config: Config) -> str:
    """The effective config as YAML in go-zero key names, every secret masked as ``******``."""
    return "\n".join(_describe(config, "")) + "\n"


def _describe(obj: Any, indent: str) -> Iterator[str]:
    for f in fields(obj):
        key = _yaml_key(f.name)
        if key is None:
            continue
        value = getattr(obj, f.name)
        if is_dataclass(value):
            yield f"{indent}{key}:{_section_note(value)}"
            yield from _describe(value, indent + "  ")
        elif isinstance(value, tuple):
            yield f"{indent}{key}:" + ("" if value else " []")
            yield from (f"{indent}  - {_scalar(item)}" for item in value)
        else:
            yield f"{indent}{key}: {_scalar(_masked(f.name, f.repr, value))}{_note(obj, f.name)}"


def _masked(name: str, shown_in_repr: bool, value: Any) -> Any:
    """Secrets (the fields hidden from repr) as ``******``; a DSN keeps all but its password."""
    if name == "data_source":
        return mask_dsn(value)
    return MASK if value and not shown_in_repr else value


def _note(obj: Any, name: str) -> str:
    """A trailing comment with what a value resolves to, where that is not obvious."""
    if name == "data_source":
        return f"  # {_dsn_summary(obj.dsn)}"
    if name == "timezone" and not obj.timezone:
        return f"  # the server's local zone: {local_zone_name()}"
    return "  # milliseconds" if name == "timeout_ms" else ""


def _section_note(section: Any) -> str:
    """A trailing comment on an RPC client's section: where its calls go."""
    if not isinstance(section, RpcClientConf):
        return ""
    return f"  # {rpc_source(section) or 'not configured'}"


def _dsn_summary(dsn: MysqlDsn) -> str:
    host = f"[{dsn.host}]" if ":" in dsn.host else dsn.host
    where = f"unix({dsn.unix_socket})" if dsn.unix_socket else f"tcp({host}:{dsn.port})"
    return (
        f"{where}, user {dsn.user!r}, database {dsn.database!r}, charset {dsn.charset},"
        f" parseTime {str(dsn.parse_time).lower()}, loc {dsn.loc}, timeout {dsn.timeout_s:g}s"
    )


def _scalar(value: Any) -> str:
    """A YAML scalar that reads back as ``value`` (quoted only when it must be)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
        return f"{value:.20f}".rstrip("0") if "e" in text else text
    if not isinstance(value, str):
        return str(value)
    try:
        plain = parse_yaml(value) == value
    except Exception:  # any YAML error means the plain form is unusable
        plain = False
    return value if plain and value.strip() == value else json.dumps(value, ensure_ascii=False)
