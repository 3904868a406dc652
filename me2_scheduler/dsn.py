"""go-sql-driver/mysql DSNs, parsed as its ``ParseDSN`` does, so the seed's DSN means the same.

``[user[:password]@][net[(addr)]]/dbname[?param1=value1&paramN=valueN]``: the
database part starts at the LAST ``/``; user-info ends at the last ``@`` before
it; the user ends at the first ``:`` (so a password may hold ``:`` and ``@``).
A ``/`` in a param value must be escaped (``loc=Asia%2FShanghai``), exactly as
with the Go driver. Of the params, ``charset``, ``parseTime``, ``loc``,
``timeout``, ``readTimeout`` and ``writeTimeout`` are used; the rest are ignored.

The three timeouts are Go durations (``5s``, ``500ms``, ``1m30s``) as
go-sql-driver reads them with ``time.ParseDuration``. Go takes ``0`` (and its
default) as "no timeout"; here every timeout must be positive, because a
connection without one hangs for ever on a server that stops answering.
Absent, ``timeout`` is ``DEFAULT_CONNECT_TIMEOUT_S`` and the I/O timeouts stay
None, for ``io_timeouts`` to fill in with their defaults where a connection is
made (a schema change reads longer).

Every error is ``ConfigError("Mysql.DataSource", ...)`` and never holds the
password: messages echo no part of the DSN that could contain it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, unquote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from me2_scheduler.errors import ConfigError

DSN_KEY = "Mysql.DataSource"
MASK = "******"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DURATION_PART = r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_DURATION = re.compile(rf"[-+]?(?:{_DURATION_PART})+")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "m": 60,
    "h": 3600,
}
_TRUE, _FALSE = ("1", "true", "TRUE", "True"), ("0", "false", "FALSE", "False")
# Covers two lost SYNs (Linux resends at 1 s and 3 s), yet a dead address fails
# a start or an RPC quickly; a handshake on a healthy LAN takes milliseconds.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 365 * 24 * 3600  # PyMySQL refuses a longer connect timeout
# Defaults for a DSN without readTimeout/writeTimeout (go-sql-driver's are "none").
# The service's statements are short: point reads and writes by primary key,
# pages of at most a few thousand rows, a COUNT(*) by status over the index;
# even at millions of avatars each answers in well under a few seconds, and a
# row-lock wait longer than 30 s means a stuck transaction, not a busy server.
# 30 s also matches the default Schedule.LeaseSeconds: a worker whose MySQL
# went silent gives up about when its lease lapses, never minutes later. The
# longer legitimate waits are raised explicitly: GET_LOCK waits (``named_lock``)
# and the DDL of ``init-db`` (``ddl=True``), which may rebuild an index of a
# table of millions of rows for minutes.
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_WRITE_TIMEOUT_S = 30.0  # a statement is a few KB; a write only waits on a full buffer
DDL_READ_TIMEOUT_S = 3600.0
_TIMEOUT_PARAMS = {
    "timeout": "timeout_s",
    "readTimeout": "read_timeout_s",
    "writeTimeout": "write_timeout_s",
}


@dataclass(frozen=True)
class MysqlDsn:
    """A go-sql-driver/mysql DSN, parsed: ``user:pass@tcp(host:port)/db?params``.

    With ``unix(/path)``, ``unix_socket`` is set and ``host``/``port`` are unused.
    """

    user: str = "root"
    password: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str = ""
    database: str = ""
    charset: str = "utf8mb4"
    parse_time: bool = False
    loc: str = "UTC"  # IANA zone name DATETIME columns are read/written in ("Local" resolved)
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S  # ``timeout``: TCP connect
    read_timeout_s: float | None = None  # ``readTimeout``; None: absent from the DSN
    write_timeout_s: float | None = None  # ``writeTimeout``; None: absent from the DSN


def io_timeouts(dsn: MysqlDsn, *, ddl: bool = False) -> tuple[float, float]:
    """``(read, write)`` seconds: the DSN's ``readTimeout``/``writeTimeout``, else the defaults.

    ``ddl``: the connection runs schema changes, whose reads default to
    ``DDL_READ_TIMEOUT_S``. A ``readTimeout`` in the DSN applies to them too,
    as go-sql-driver applies it to every read.
    """
    read = dsn.read_timeout_s or (DDL_READ_TIMEOUT_S if ddl else DEFAULT_READ_TIMEOUT_S)
    return read, dsn.write_timeout_s or DEFAULT_WRITE_TIMEOUT_S


def parse_dsn(dsn: str) -> MysqlDsn:
    """Parse a Go MySQL DSN; raise ``ConfigError("Mysql.DataSource", ...)`` if malformed."""
    try:
        return _parse(dsn)
    except ConfigError as exc:
        raise ConfigError(DSN_KEY, _scrub(exc.problem, dsn)) from None


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``******`` (unchanged when it has none)."""
    at, colon = _userinfo_bounds(dsn)
    if colon < 0 or colon + 1 == at:
        return dsn
    return dsn[: colon + 1] + MASK + dsn[at:]


def _userinfo_bounds(dsn: str) -> tuple[int, int]:
    """Index of the user-info ``@`` and of the ``:`` ending the user (-1 when absent)."""
    slash = dsn.rfind("/")
    at = dsn.rfind("@", 0, slash if slash >= 0 else len(dsn))
    return at, dsn.find(":", 0, at) if at > 0 else -1


def _scrub(message: str, dsn: str) -> str:
    """Belt and braces: mask anything that could be the password, however the DSN splits."""
    at, colon = _userinfo_bounds(dsn)
    first_colon, last_at = dsn.find(":"), dsn.rfind("@")
    for start, end in ((colon, at), (first_colon, last_at)):
        secret = dsn[start + 1 : end] if 0 <= start < end else ""
        if secret:
            message = message.replace(secret, MASK)
    return message


def _parse(dsn: str) -> MysqlDsn:
    slash = dsn.rfind("/")
    if slash < 0:
        raise ConfigError(DSN_KEY, "invalid DSN: missing the slash separating the database name")
    at, colon = _userinfo_bounds(dsn)
    fields: dict[str, object] = {"user": "", "password": ""}  # Go's defaults: no user at all
    if at >= 0:
        fields["user"] = dsn[:colon] if colon >= 0 else dsn[:at]
        fields["password"] = dsn[colon + 1 : at] if colon >= 0 else ""
    fields.update(_address(dsn[at + 1 : slash]))
    database, _, params = dsn[slash + 1 :].partition("?")
    fields["database"] = _unescape(database, "database name", plus=False)
    fields.update(_params(params))
    return MysqlDsn(**fields)  # type: ignore[arg-type]


def _address(part: str) -> dict[str, object]:
    """``net(addr)`` → host/port or unix_socket, with go-sql-driver's defaults."""
    net, paren, addr = part.partition("(")
    if paren:
        if not addr.endswith(")"):
            problem = (
                "did you forget to escape a param value?"
                if ")" in addr
                else ("network address not terminated (missing closing brace)")
            )
            raise ConfigError(DSN_KEY, f"invalid DSN: {problem}")
        addr = addr[:-1]
    net = net or "tcp"
    if net == "unix":
        return {"unix_socket": addr or "/tmp/mysql.sock", "host": "localhost"}
    if net not in ("tcp", "tcp4", "tcp6") or (net != "tcp" and not addr):
        raise ConfigError(
            DSN_KEY, "invalid DSN: unsupported network; write tcp(host:port) or unix(/path)"
        )
    return _host_port(addr or "127.0.0.1:3306")


def _host_port(addr: str) -> dict[str, object]:
    """Split ``host:port``, ``[v6]:port`` or a bare host (port 3306, as ensureHavePort)."""
    if addr.startswith("["):
        host, bracket, rest = addr[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(DSN_KEY, "invalid DSN: malformed IPv6 address in tcp(...)")
        port = rest[1:] if rest else "3306"
    elif addr.count(":") == 1:
        host, _, port = addr.partition(":")
    else:  # a bare host, or a bare IPv6 address such as ::1
        host, port = addr, "3306"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(DSN_KEY, "invalid DSN: the port in tcp(host:port) must be 1-65535")
    return {"host": host or "127.0.0.1", "port": int(port)}


def _params(query: str) -> dict[str, object]:
    """The params this service uses; unknown ones and ones without ``=`` are ignored."""
    found: dict[str, object] = {}
    for pair in query.split("&") if query else ():
        key, eq, value = pair.partition("=")
        if not eq:
            continue
        if key == "charset":
            found["charset"] = value.split(",")[0]
        elif key == "parseTime":
            found["parse_time"] = _bool(value)
        elif key == "loc":
            found["loc"] = _location(_unescape(value, "loc", plus=True))
        elif key in _TIMEOUT_PARAMS:
            found[_TIMEOUT_PARAMS[key]] = _timeout(key, value)
    return found


def _unescape(text: str, what: str, *, plus: bool) -> str:
    if _BAD_ESCAPE.search(text):
        raise ConfigError(DSN_KEY, f"invalid DSN: bad %-escape in the {what}")
    return unquote_plus(text) if plus else unquote(text)


def _bool(value: str) -> bool:
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ConfigError(DSN_KEY, f"invalid DSN: parseTime must be true or false, got {value!r}")


def _location(name: str) -> str:
    """Go's ``time.LoadLocation``: "" and UTC → UTC, Local → the host's zone, else IANA."""
    if name in ("", "UTC"):
        return "UTC"
    if name == "Local":
        return local_zone_name()
    if not zone_exists(name):
        raise ConfigError(DSN_KEY, f"invalid DSN: unknown time zone {name!r} in loc")
    return name


def _timeout(key: str, value: str) -> float:
    """A timeout param's seconds; raise ConfigError naming ``key`` unless a positive duration."""
    try:
        seconds = parse_go_duration(value)
    except ValueError as exc:
        raise ConfigError(
            DSN_KEY, f"invalid DSN: {key}: {exc}; write a Go duration such as 5s, 500ms or 1m30s"
        ) from None
    if seconds <= 0:
        raise ConfigError(
            DSN_KEY,
            f"invalid DSN: {key} must be positive, got {value!r}"
            " (without a timeout a silent server would hang the service)",
        )
    if seconds > MAX_TIMEOUT_S:
        raise ConfigError(DSN_KEY, f"invalid DSN: {key} must be at most 8760h, got {value!r}")
    return seconds


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration (``5s``, ``500ms``, ``1m30s``, ``0``); raise ``ValueError``."""
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _DURATION.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}")
    total = sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(_DURATION_PART, text))
    return -total if text.startswith("-") else total


def zone_exists(name: str) -> bool:
    """True when ``name`` is an IANA time zone this host (or tzdata) knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def local_zone_name() -> str:
    """The host's zone as an IANA name, as Go's ``time.Local`` finds it; "UTC" if unnamed.

    Order: ``TZ`` (empty means UTC, as in Go), the ``/etc/localtime`` symlink,
    ``/etc/timezone``. A host whose ``/etc/localtime`` is a plain copy and has no
    ``/etc/timezone`` cannot be named, and is taken as UTC: set ``TZ`` there.
    """
    tz = os.environ.get("TZ")
    if tz is not None:
        name = tz.removeprefix(":")
        name = _zone_from_path(name) if name.startswith("/") else name
        return name if name and zone_exists(name) else "UTC"
    for candidate in (_zone_from_path(os.path.realpath("/etc/localtime")), _etc_timezone()):
        if candidate and zone_exists(candidate):
            return candidate
    return "UTC"


def _zone_from_path(path: str) -> str:
    _, marker, name = path.partition("/zoneinfo/")
    return name.removeprefix("posix/") if marker else ""


def _etc_timezone() -> str:
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""
