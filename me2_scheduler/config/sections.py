"""The config's sections: frozen dataclasses whose fields declare key and bounds once.

Keys are go-zero's, CamelCase of the field name unless ``key=`` says
otherwise; every key this rewrite adds has a default, so the seed's
``scheduler-dev.yaml`` loads unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from me2_scheduler.config.rules import check_cron, check_zone
from me2_scheduler.config.schema import (
    A_CENTURY_DAYS,
    DERIVED,
    ONE_YEAR_H,
    ONE_YEAR_MS,
    ONE_YEAR_S,
    Address,
    Limit,
    setting,
)
from me2_scheduler.dsn import MysqlDsn

DEFAULT_CRON = "0 22 * * *"
DEFAULT_MAX_MSG_SIZE = 16 * 1024 * 1024  # bytes, each way, per gRPC message
MODES = ("dev", "test", "rt", "pre", "pro")  # go-zero's service modes
NOT_VERIFIED = "is not supported (gRPC always verifies): give CACertFile instead"


@dataclass(frozen=True)
class MysqlConf:
    data_source: str = setting("", secret=True)
    dsn: MysqlDsn = field(default_factory=MysqlDsn, metadata=DERIVED)
    pool_size: int = setting(8, ge=1)


@dataclass(frozen=True)
class RedisConf:
    host: str = setting("127.0.0.1:6379", address=Address.SEEDS)
    type: str = setting("node", choices=("node", "cluster"))
    password: str = setting("", key="Pass", secret=True)
    key: str = setting("me2:scheduler", non_empty=True)
    db: int = setting(0, key="DB", ge=0)


@dataclass(frozen=True)
class EtcdConf:
    hosts: tuple[str, ...] = setting((), address=Address.ETCD)
    key: str = ""
    id: int = setting(0, key="ID")
    user: str = ""
    password: str = setting("", key="Pass", secret=True)
    cert_file: str = setting("", tls="cert")
    cert_key_file: str = setting("", tls="key")
    ca_file: str = setting("", key="CACertFile", tls="ca")
    # go-zero's key; refused: gRPC cannot skip verification.
    insecure_skip_verify: bool = setting(False, refused=NOT_VERIFIED)


@dataclass(frozen=True)
class RpcClientConf:
    """A downstream zrpc client: ``Endpoints`` > ``Target`` > ``Etcd``; TLS when a file is set."""

    endpoints: tuple[str, ...] = setting((), address=Address.LIST)
    target: str = ""
    etcd: EtcdConf = field(default_factory=EtcdConf)
    timeout_ms: int = setting(2000, key="Timeout", gt=0, unit="milliseconds", le=ONE_YEAR_MS)
    app: str = ""
    token: str = setting("", secret=True)
    # Trust this CA (TLS on); else the system roots when CertFile is set.
    ca_file: str = setting("", key="CACertFile", tls="ca")
    cert_file: str = setting("", tls="cert")  # for a server that wants mutual TLS
    key_file: str = setting("", tls="key")
    max_msg_size: int = setting(DEFAULT_MAX_MSG_SIZE, gt=0)
    # The key path this client's Etcd was taken from (see relations.derive_diary_rpc).
    derived_from: str = field(default="", metadata=DERIVED)


@dataclass(frozen=True)
class ScheduleConf:
    # Seconds between safety-net sweeps (the seed's scan).
    scan_interval: float = setting(60.0, ge=1, unit="seconds", le=ONE_YEAR_S)
    max_workers: int = setting(10, ge=1, le=Limit(1000, "worker processes"))
    # Action calls in flight across the host's workers; 0 = one per worker (the seed's semaphore).
    max_in_flight: int = setting(0, ge=0, le=Limit(10000, "calls in flight"))
    # Seconds between claims of due avatars.
    poll_interval: float = setting(1.0, gt=0, unit="seconds", le=ONE_YEAR_S)
    claim_batch: int = setting(500, ge=1)
    # Claims a worker takes at once and records in one transaction.
    dispatch_batch: int = setting(32, ge=1, le=Limit(1000, "claims per transaction"))
    lease_seconds: float = setting(30.0, gt=0, le=ONE_YEAR_S)
    retry_delay_seconds: float = setting(300.0, gt=0, le=ONE_YEAR_S)
    max_consecutive_failures: int = setting(5, ge=1)
    sweep_grace_seconds: float = setting(30.0, ge=0, le=ONE_YEAR_S)
    shutdown_timeout_seconds: float = setting(30.0, gt=0, le=ONE_YEAR_S)


@dataclass(frozen=True)
class ActionScheduleConf:
    min_interval_hours: float = setting(2.0, gt=0, le=ONE_YEAR_H)
    max_interval_hours: float = setting(6.0, gt=0, le=ONE_YEAR_H)


@dataclass(frozen=True)
class DiaryScheduleConf:
    cron_expression: str = setting(DEFAULT_CRON, check=check_cron)
    concurrency: int = setting(1, ge=1)
    timeout_seconds: float = setting(60.0, gt=0, le=ONE_YEAR_S)
    misfire_grace_seconds: float = setting(3600.0, ge=0, le=ONE_YEAR_S)
    stale_run_seconds: float = setting(120.0, gt=0, le=ONE_YEAR_S)


@dataclass(frozen=True)
class HistoryConf:
    retention_days: int = setting(30, ge=0, le=A_CENTURY_DAYS)


@dataclass(frozen=True)
class PrometheusConf:
    host: str = ""  # served only when set, as go-zero
    port: int = setting(9101, port=True)
    path: str = setting("/metrics", starts_with="/")


@dataclass(frozen=True)
class ConsoleConf:
    """The operators' web console under ``/console/``: on a listener of its own at
    ``Host:Port`` when ``Host`` is set, else on the Prometheus listener."""

    enabled: bool = False
    user: str = ""  # the operator's login, named in the access log of every action
    # No default: give it from the environment, Password: "${ME2_CONSOLE_PASSWORD}".
    password: str = setting("", secret=True)
    token: str = setting("", secret=True)  # optional bearer token for scripts
    host: str = ""  # e.g. 127.0.0.1: keeps the console off a metrics port others can reach
    port: int = setting(9102, port=True)


@dataclass(frozen=True)
class LogConf:
    encoding: str = setting("json", choices=("plain", "json"))  # json is go-zero's default
    level: str = setting("info", choices=("debug", "info", "error", "severe"))


@dataclass(frozen=True)
class Config:
    name: str = setting("scheduler.rpc", non_empty=True)
    mode: str = setting("pro", choices=MODES)
    listen_on: str = setting("0.0.0.0:8008", address=Address.ONE)
    # Server-side per-call deadline, as go-zero's RpcServerConf.Timeout.
    timeout_ms: int = setting(
        2000, key="Timeout", ge=0, unit="milliseconds; 0 = none", le=ONE_YEAR_MS
    )
    # IANA name for what people read; "" = the server's local zone.
    timezone: str = setting("", check=check_zone)
    etcd: EtcdConf = field(default_factory=EtcdConf)  # registration, when Hosts and Key are set
    auth: bool = False  # go-zero's app/token check: token = HGET <Redis.Key> <app>
    strict_control: bool = False  # Auth: an unknown app or a failed lookup is refused
    cert_file: str = setting("", tls="cert")  # TLS on when set, with key_file
    key_file: str = setting("", tls="key")
    # Clients must present a certificate signed by this CA (mutual TLS).
    ca_file: str = setting("", key="CACertFile", tls="ca")
    max_msg_size: int = setting(DEFAULT_MAX_MSG_SIZE, gt=0)
    mysql: MysqlConf = field(default_factory=MysqlConf)
    redis: RedisConf = field(default_factory=RedisConf)
    action_rpc: RpcClientConf = field(default_factory=RpcClientConf)
    diary_rpc: RpcClientConf = field(default_factory=RpcClientConf)
    schedule: ScheduleConf = field(default_factory=ScheduleConf)
    action_schedule: ActionScheduleConf = field(default_factory=ActionScheduleConf)
    diary_schedule: DiaryScheduleConf = field(default_factory=DiaryScheduleConf)
    history: HistoryConf = field(default_factory=HistoryConf)
    prometheus: PrometheusConf = field(default_factory=PrometheusConf)
    console: ConsoleConf = field(default_factory=ConsoleConf)
    log: LogConf = field(default_factory=LogConf)
