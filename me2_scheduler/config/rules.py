"""The rules one value obeys on its own, read from its field's ``Spec``.

``check_fields`` walks a config and raises ``ConfigError(key_path, problem)``
at the first value that breaks its rules; rules between values are in
``relations``. The problem ends with the value (``got 0``) unless the value
may be a secret or is quoted already.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from me2_scheduler.config.goconf import scalar
from me2_scheduler.config.schema import Address, Item, Spec, walk
from me2_scheduler.cron import parse as parse_cron
from me2_scheduler.dsn import zone_exists
from me2_scheduler.errors import ConfigError


def check_fields(config: Any) -> None:
    """Check every YAML-backed value of ``config`` against its field's rules.

    Raises ``ConfigError`` naming the key path of the first value that fails.
    """
    for item in walk(config):
        check_item(item)


def check_item(item: Item) -> None:
    """Check one value against its ``Spec``; raise ``ConfigError`` keyed by its path."""
    spec, path, value = item.spec, item.path, item.value
    if spec.refused and value:
        raise ConfigError(path, spec.refused)
    problem = _bound_problem(spec, value) or _text_problem(spec, value)
    if problem:
        raise ConfigError(path, f"{problem}, got {scalar(value)}")
    if spec.address:
        _check_addresses(path, value, spec.address)
    if spec.check:
        spec.check(path, value)


def _bound_problem(spec: Spec, value: Any) -> str:
    """What a number's bounds say about ``value``, "" when it is within them."""
    unit = f" ({spec.unit})" if spec.unit else ""
    if spec.gt is not None and not value > spec.gt:
        return ("must be positive" if spec.gt == 0 else f"must exceed {spec.gt}") + unit
    if spec.ge is not None and not value >= spec.ge:
        return ("must not be negative" if spec.ge == 0 else f"must be at least {spec.ge}") + unit
    if spec.le is not None and not value <= spec.le.value:
        return f"must be at most {spec.le.value} ({spec.le.note})"
    if spec.port and not 0 < value < 65536:
        return "must be a port 1-65535"
    return ""


def _text_problem(spec: Spec, value: Any) -> str:
    """What a string's rules say about ``value``, "" when it obeys them."""
    if spec.non_empty and not value.strip():
        return "must not be empty"
    if spec.choices and value not in spec.choices:
        return "must be one of " + "|".join(spec.choices)
    if spec.starts_with and not value.startswith(spec.starts_with):
        return f"must start with {spec.starts_with}"
    return ""


def _check_addresses(path: str, value: Any, kind: Address) -> None:
    """Each address of ``value`` as ``kind`` says; a list's items keyed ``Path[i]``."""
    if kind is Address.ONE:
        check_host_port(path, value)
    elif kind is Address.SEEDS:
        for seed in value.split(","):
            check_host_port(path, seed.strip())
    else:
        schemes = ("http://", "https://") if kind is Address.ETCD else ()
        for i, address in enumerate(value):
            check_host_port(f"{path}[{i}]", address, schemes)


def check_host_port(path: str, address: str, schemes: tuple[str, ...] = ()) -> None:
    """Check ``host:port`` (IPv6 hosts bracketed), after any of ``schemes``.

    Raises ``ConfigError(path, ...)`` without a port, or with one outside 1-65535.
    """
    bare = address
    for scheme in schemes:
        bare = bare.removeprefix(scheme)
    host, colon, port = bare.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not colon or (":" in host and not bracketed):
        raise ConfigError(path, f"must be host:port, got {scalar(address)}")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(path, f"the port must be 1-65535, got {scalar(address)}")


def check_zone(path: str, name: str) -> None:
    """``name`` must be "" (the server's zone) or an IANA zone; else ``ConfigError``."""
    if name and not zone_exists(name):
        raise ConfigError(path, f"not an IANA time zone: {scalar(name)}")


def check_cron(path: str, expr: str) -> None:
    """``expr`` must be a robfig/cron standard line (5 fields or ``@daily``...)."""
    try:
        parse_cron(expr, ZoneInfo("UTC"))
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
