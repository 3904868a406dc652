"""How a config field declares itself: its go-zero key, its bounds, what it names.

A field is ``setting(default, key=..., ge=..., le=..., ...)``: a
``dataclasses.field`` whose metadata holds a ``Spec``. The loader reads the
key from it, the validator its rules, so adding a key touches one line.
``walk`` yields every YAML-backed value of a config with its key path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, NamedTuple

_SPEC = "me2_scheduler.config"  # the metadata key a field's Spec is stored under


class Limit(NamedTuple):
    """An upper bound and what it is, for the message: ``Limit(1000, "worker processes")``."""

    value: float
    note: str


YEAR_S = 365 * 24 * 3600
# Past these a config loads but the service breaks at run time: timedelta,
# datetime or threading overflow on every dispatch or wait.
ONE_YEAR_S = Limit(YEAR_S, "seconds, one year")
ONE_YEAR_MS = Limit(YEAR_S * 1000, "milliseconds, one year")
ONE_YEAR_H = Limit(24 * 365, "hours, one year")
A_CENTURY_DAYS = Limit(36500, "days, a century")


class Address(Enum):
    """How a field names servers; each address is ``host:port``, the port 1-65535."""

    ONE = "host:port"
    SEEDS = "host:port,host:port"  # one string, comma-separated (a Redis cluster's seeds)
    LIST = "a list of host:port"
    ETCD = "a list of host:port, each may start with http:// or https://"


@dataclass(frozen=True)
class Spec:
    """What a field declares: its go-zero key and the rules its value obeys.

    ``unit`` is added to the lower-bound message where the key does not say
    it (``Schedule.ScanInterval: must be at least 1 (seconds)``); ``tls`` is
    the file's role (``cert``, ``key``, ``ca``: read at start, paired by
    ``relations``); ``refused`` is the problem of a go-zero key this service
    cannot honour, reported when it is set; ``check`` raises ``ConfigError``
    for a value that is not valid on its own (a time zone, a cron line).
    """

    key: str | None = None
    derived: bool = False
    ge: float | None = None
    gt: float | None = None
    le: Limit | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()
    non_empty: bool = False
    starts_with: str = ""
    port: bool = False
    address: Address | None = None
    tls: str = ""
    refused: str = ""
    check: Callable[[str, Any], None] | None = None


def setting(default: Any, *, secret: bool = False, **spec: Any) -> Any:
    """A dataclass field with its ``Spec`` (see ``Spec`` for the keywords).

    ``secret`` hides the value from ``repr`` and masks it in ``describe``.
    Raises ``TypeError`` for a keyword ``Spec`` does not know.
    """
    return field(default=default, repr=not secret, metadata={_SPEC: Spec(**spec)})


_PLAIN = Spec()
# The metadata of a derived field: computed at load, never read from YAML.
DERIVED = {_SPEC: Spec(derived=True)}


def spec_of(f: Field[Any]) -> Spec:
    """The field's ``Spec``; a plain ``field()`` (a section) has the empty one."""
    return f.metadata.get(_SPEC, _PLAIN)


def yaml_key(f: Field[Any]) -> str | None:
    """The field's go-zero key: declared, else CamelCase (``max_workers`` → ``MaxWorkers``).

    None for a derived field, one computed at load and never read from YAML.
    """
    spec = spec_of(f)
    if spec.derived:
        return None
    return spec.key or "".join(part.capitalize() for part in f.name.split("_"))


class Item(NamedTuple):
    """One YAML-backed value of a config, where it sits and what it declares."""

    path: str
    value: Any
    spec: Spec


def walk(section: Any, prefix: str = "") -> Iterator[Item]:
    """Every YAML-backed value under ``section``, depth first in field order.

    A nested section is yielded before the values inside it.
    """
    for f in fields(section):
        key = yaml_key(f)
        if key is None:
            continue
        path, value = f"{prefix}{key}", getattr(section, f.name)
        yield Item(path, value, spec_of(f))
        if is_dataclass(value):
            yield from walk(value, path + ".")
