"""The rules between values, and the one value derived from another section.

``check_relations`` raises ``ConfigError(key_path, problem)`` at the first
broken rule: an etcd Key with its Hosts, Action reachable, TLS files in
pairs, the interval range, the lease against the Action timeout, a Redis
cluster on db 0, an enabled console with its listener and credentials.
``derive_diary_rpc`` finds the Diary service in ActionRpc's etcd when
DiaryRpc names none, as the seed's config expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, is_dataclass, replace
from typing import Any

from me2_scheduler.config.goconf import scalar
from me2_scheduler.config.schema import spec_of, walk, yaml_key
from me2_scheduler.config.sections import Config, EtcdConf, RpcClientConf
from me2_scheduler.errors import ConfigError

DIARY_RPC_KEY = "diary.rpc"  # the Diary service's etcd key when DiaryRpc is derived


def check_relations(config: Config) -> None:
    """Check the rules between values; raise ``ConfigError`` at the first one broken."""
    checks = (
        _etcd_keys,
        _action_reachable,
        _tls_files,
        _intervals,
        _lease,
        _in_flight,
        _cluster_db,
        _console,
    )
    for check in checks:
        check(config)


def _sections(config: Config) -> Iterator[tuple[str, Any]]:
    """Every section with its key prefix (``""`` for the top level, ``ActionRpc.Etcd.``)."""
    yield "", config
    for item in walk(config):
        if is_dataclass(item.value):
            yield item.path + ".", item.value


def _etcd_keys(config: Config) -> None:
    for prefix, section in _sections(config):
        if isinstance(section, EtcdConf) and section.hosts and not section.key:
            raise ConfigError(f"{prefix}Key", "must be set when Hosts is (the service name)")


def _action_reachable(config: Config) -> None:
    action = config.action_rpc
    if not (action.endpoints or action.target or action.etcd.hosts):
        raise ConfigError("ActionRpc", "needs Endpoints, Target or Etcd.Hosts to reach Action")


def _tls_files(config: Config) -> None:
    """A certificate comes with its key, each file reads, a server CA needs a server certificate."""
    for prefix, section in _sections(config):
        files = _tls_roles(section)
        if not files:
            continue
        (cert_key, cert), (key_key, key) = files["cert"], files["key"]
        if bool(cert) != bool(key):
            missing, given = (key_key, cert_key) if cert else (cert_key, key_key)
            raise ConfigError(prefix + missing, f"must be set with {prefix}{given}")
        for role in _ROLES:
            _check_readable(prefix + files[role][0], files[role][1])
    if config.ca_file and not config.cert_file:
        raise ConfigError("CertFile", "must be set with CACertFile (mutual TLS needs server TLS)")


_ROLES = ("cert", "key", "ca")  # the TLS files a section names, in the order they are read


def _tls_roles(section: Any) -> dict[str, tuple[str, str]]:
    """The section's TLS files by role (``cert``, ``key``, ``ca``): (key, file name)."""
    found = {}
    for f in fields(section):
        role = spec_of(f).tls
        if role:
            found[role] = (yaml_key(f) or f.name, getattr(section, f.name))
    return found


def _check_readable(path: str, file: str) -> None:
    """A file named by ``path`` must open for reading (when one is named at all)."""
    if not file:
        return
    try:
        with open(file, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(path, f"cannot read {file}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the name: no such file can exist
        raise ConfigError(path, f"cannot read {scalar(file)}: {exc}") from None


def _intervals(config: Config) -> None:
    low, high = config.action_schedule.min_interval_hours, config.action_schedule.max_interval_hours
    if low > high:
        raise ConfigError(
            "ActionSchedule.MinIntervalHours",
            f"must not exceed MaxIntervalHours ({scalar(high)}), got {scalar(low)}",
        )


def _lease(config: Config) -> None:
    """Only a dead worker may let a lease expire: it outlives the longest Action call."""
    lease, timeout_s = config.schedule.lease_seconds, config.action_rpc.timeout_ms / 1000
    if lease <= timeout_s:
        raise ConfigError(
            "Schedule.LeaseSeconds",
            f"must exceed ActionRpc.Timeout ({scalar(timeout_s)} s), so that only a dead worker"
            f" lets a lease expire; got {scalar(lease)}",
        )


def _in_flight(config: Config) -> None:
    """Every worker holds at least one call: the seed's one call per worker is the floor."""
    schedule = config.schedule
    if schedule.max_in_flight < schedule.max_workers:
        raise ConfigError(
            "Schedule.MaxInFlight",
            f"must be at least Schedule.MaxWorkers ({schedule.max_workers}), each worker holding"
            f" one call or more; got {schedule.max_in_flight}",
        )


def _cluster_db(config: Config) -> None:
    if config.redis.type == "cluster" and config.redis.db != 0:
        raise ConfigError("Redis.DB", "must be 0 with Redis.Type cluster (a cluster has only db 0)")


MIN_CONSOLE_SECRET = 12  # characters of a console password or token


def _console(config: Config) -> None:
    """An enabled console has a listener (its own, or Prometheus's) and credentials, no default."""
    console = config.console
    if console.password and not console.user.strip():
        raise ConfigError("Console.User", "must be set with Console.Password (the login name)")
    if ":" in console.user:
        raise ConfigError("Console.User", "must not contain ':' (HTTP basic auth splits on it)")
    for key, secret in (("Password", console.password), ("Token", console.token)):
        if secret and len(secret) < MIN_CONSOLE_SECRET:
            raise ConfigError(f"Console.{key}", f"must be at least {MIN_CONSOLE_SECRET} characters")
    if not console.enabled:
        return
    if not (console.host.strip() or config.prometheus.host.strip()):
        raise ConfigError(
            "Console.Enabled",
            "needs Console.Host (its own listener) or Prometheus.Host (served there, under"
            " /console/)",
        )
    both = console.host.strip() and config.prometheus.host.strip()
    if both and console.port == config.prometheus.port:
        raise ConfigError("Console.Port", "must differ from Prometheus.Port")
    if not (console.password or console.token):
        raise ConfigError(
            "Console.Password",
            "must be set when Console.Enabled is true (there is no default password;"
            ' e.g. Password: "${ME2_CONSOLE_PASSWORD}")',
        )


def derive_diary_rpc(diary: RpcClientConf, action: RpcClientConf) -> RpcClientConf:
    """``DiaryRpc`` as given, or, when it names no service, ``diary.rpc`` on ActionRpc's etcd.

    The seed's config has no DiaryRpc, yet its Diary service is registered in
    the same etcd as Action: the same hosts, account and TLS find it there.
    A ``DiaryRpc.Etcd.Key`` given without hosts is kept.
    """
    if diary.endpoints or diary.target.strip() or diary.etcd.hosts or not action.etcd.hosts:
        return diary
    etcd = replace(action.etcd, key=diary.etcd.key or DIARY_RPC_KEY, id=0)
    return replace(diary, etcd=etcd, derived_from="ActionRpc.Etcd")
