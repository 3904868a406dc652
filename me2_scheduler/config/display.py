"""The effective config for people: ``describe`` (``check-config``) and ``rpc_source``.

``describe`` prints YAML in go-zero key names that reads back as the same
config, every secret (a field hidden from ``repr``) masked as ``******``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import Field, fields, is_dataclass
from typing import Any

from me2_scheduler.config.goconf import scalar
from me2_scheduler.config.schema import yaml_key
from me2_scheduler.config.sections import Config, RpcClientConf
from me2_scheduler.dsn import MASK, MysqlDsn, io_timeouts, local_zone_name, mask_dsn


def describe(config: Config) -> str:
    """The effective config as YAML in go-zero key names, every secret masked as ``******``."""
    return "\n".join(_describe(config, "")) + "\n"


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


def _describe(section: Any, indent: str) -> Iterator[str]:
    for f in fields(section):
        key = yaml_key(f)
        if key is None:
            continue
        value = getattr(section, f.name)
        if is_dataclass(value):
            yield f"{indent}{key}:{_section_note(value)}"
            yield from _describe(value, indent + "  ")
        elif isinstance(value, tuple):
            yield f"{indent}{key}:" + ("" if value else " []")
            yield from (f"{indent}  - {scalar(item)}" for item in value)
        else:
            yield f"{indent}{key}: {scalar(_masked(f, value))}{_note(section, f.name)}"


def _masked(f: Field[Any], value: Any) -> Any:
    """Secrets (the fields hidden from repr) as ``******``; a DSN keeps all but its password."""
    if f.name == "data_source":
        return mask_dsn(value)
    return MASK if value and not f.repr else value


def _note(section: Any, name: str) -> str:
    """A trailing comment with what a value resolves to, where that is not obvious."""
    if name == "data_source":
        return f"  # {_dsn_summary(section.dsn)}"
    if name == "timezone" and not section.timezone:
        return f"  # the server's local zone: {local_zone_name()}"
    return "  # milliseconds" if name.endswith("_ms") else ""


def _section_note(section: Any) -> str:
    """A trailing comment on an RPC client's section: where its calls go."""
    if not isinstance(section, RpcClientConf):
        return ""
    return f"  # {rpc_source(section) or 'not configured'}"


def _dsn_summary(dsn: MysqlDsn) -> str:
    """The DSN as the service uses it; the timeouts as in effect, defaults filled in."""
    host = f"[{dsn.host}]" if ":" in dsn.host else dsn.host
    where = f"unix({dsn.unix_socket})" if dsn.unix_socket else f"tcp({host}:{dsn.port})"
    read_s, write_s = io_timeouts(dsn)
    return (
        f"{where}, user {dsn.user!r}, database {dsn.database!r}, charset {dsn.charset},"
        f" parseTime {str(dsn.parse_time).lower()}, loc {dsn.loc}, timeout {dsn.timeout_s:g}s,"
        f" readTimeout {read_s:g}s, writeTimeout {write_s:g}s"
    )
