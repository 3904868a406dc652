"""The service configuration: one frozen, typed object loaded from go-zero-shaped YAML.

Keys are go-zero's (``ListenOn``, ``Mysql.DataSource``, ``Schedule.MaxWorkers``);
every key this rewrite adds has a default, so the seed's ``scheduler-dev.yaml``
loads unchanged. ``load_config`` raises ``ConfigError(key_path, problem)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CRON = "0 22 * * *"


@dataclass(frozen=True)
class MysqlDsn:
    """A go-sql-driver/mysql DSN, parsed: ``user:pass@tcp(host:port)/db?params``."""

    user: str = "root"
    password: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str = ""
    database: str = ""
    charset: str = "utf8mb4"
    parse_time: bool = False
    loc: str = "UTC"  # IANA zone name DATETIME columns are read/written in ("Local" resolved)
    timeout_s: float = 10.0


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


@dataclass(frozen=True)
class RpcClientConf:
    """A downstream zrpc client: ``Endpoints`` > ``Target`` > ``Etcd``."""

    endpoints: tuple[str, ...] = ()
    target: str = ""
    etcd: EtcdConf = field(default_factory=EtcdConf)
    timeout_ms: int = 2000
    app: str = ""
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class ScheduleConf:
    scan_interval: float = 60.0  # seconds between safety-net sweeps (the seed's scan)
    max_workers: int = 10
    poll_interval: float = 1.0  # seconds between claims of due avatars
    claim_batch: int = 500
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
    encoding: str = "plain"  # plain | json
    level: str = "info"  # debug | info | error | severe


@dataclass(frozen=True)
class Config:
    name: str = "scheduler.rpc"
    mode: str = "pro"
    listen_on: str = "0.0.0.0:8008"
    timeout_ms: int = 2000  # server-side per-call deadline, as go-zero's RpcServerConf.Timeout
    timezone: str = ""  # IANA name for what people read; "" = the server's local zone
    etcd: EtcdConf = field(default_factory=EtcdConf)
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


def load_config(path: str) -> Config:
    """Load, expand ``${VAR}`` and validate a YAML file; raise ``ConfigError`` on any problem."""
    raise NotImplementedError  # filled by the config work (issue 2)
