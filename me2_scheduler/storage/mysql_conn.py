"""Connections to MySQL: connect arguments, session time zone, error translation, the pool.

One place builds pymysql's connect arguments from ``MysqlConf.dsn`` and turns
every driver error into a ``StoreError`` whose text names the server and what
failed, and never the password.

Time zone: DATETIME columns hold wall-clock times in the zone the DSN's
``loc`` names (as go-sql-driver/mysql does). Every value this package writes
is converted to ``loc`` in Python, ``created_at``/``updated_at`` included, so
correctness never depends on the session. The session ``time_zone`` is still
set, at connect, to ``loc``'s UTC offset at that moment (a numeric offset
works without the server's time-zone tables), so that server-side
``CURRENT_TIMESTAMP``/``NOW()`` agree with ``loc`` for anyone else's SQL. A
connection that lives across a DST change keeps its old offset until it is
recycled; nothing this package writes depends on it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pymysql
from dbutils.pooled_db import PooledDB, PooledDBError
from dbutils.steady_db import SteadyDBError

from me2_scheduler.config import MysqlConf, MysqlDsn
from me2_scheduler.errors import ConfigError, StoreError

# Client-side error codes that mean "the connection is gone", as opposed to a
# statement that failed (deadlock, lock wait timeout) on a healthy connection.
CONNECTION_LOST = frozenset({0, 2003, 2006, 2013, 2055})


def zone(loc: str) -> tzinfo:
    """The ``tzinfo`` for a DSN ``loc`` ("" and "UTC" are UTC).

    Raises ConfigError (key ``Mysql.DataSource``) for an unknown zone name.
    """
    if loc in ("", "UTC"):
        return timezone.utc
    try:
        return ZoneInfo(loc)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("Mysql.DataSource", f"unknown time zone loc={loc!r}") from None


def session_offset(loc: tzinfo, now: datetime | None = None) -> str:
    """``loc``'s UTC offset at ``now`` as MySQL's ``time_zone`` wants it: ``+08:00``."""
    offset = (now or datetime.now(timezone.utc)).astimezone(loc).utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def connect_args(dsn: MysqlDsn) -> dict[str, Any]:
    """pymysql's keyword arguments for ``dsn`` (autocommit off, no time zone yet)."""
    args: dict[str, Any] = {
        "user": dsn.user,
        "password": dsn.password,
        "database": dsn.database or None,
        "charset": dsn.charset or "utf8mb4",
        "connect_timeout": max(1, round(dsn.timeout_s)),
        "autocommit": False,
        # go-sql-driver's default is tls=false, and the DSN has no tls param yet.
        # PyMySQL >= 1.2 would otherwise try TLS ("preferred") and build an SSL
        # context per connection: ~27 ms of CPU each, and TLS on every query to a
        # server that offers it.
        "ssl_disabled": True,
    }
    if dsn.unix_socket:
        args["unix_socket"] = dsn.unix_socket
    else:
        args["host"], args["port"] = dsn.host, dsn.port
    return args


def open_connection(conf: MysqlConf, **extra: Any) -> pymysql.connections.Connection:
    """A new pymysql connection with the session time zone set to ``loc``'s offset.

    Raises pymysql errors untranslated; callers wrap it in ``translated``.
    """
    offset = session_offset(zone(conf.dsn.loc))
    args = {**connect_args(conf.dsn), "init_command": f"SET time_zone = '{offset}'", **extra}
    return pymysql.connect(**args)


def where(dsn: MysqlDsn) -> str:
    """The server and database an error message names: ``127.0.0.1:3306/me2``."""
    server = dsn.unix_socket or f"{dsn.host}:{dsn.port}"
    return f"{server}/{dsn.database}"


def describe(dsn: MysqlDsn, action: str, exc: BaseException) -> str:
    """One sentence for a driver error, with the password scrubbed should it appear."""
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        reason = f"{args[1]} ({args[0]})"
    else:
        reason = str(exc) or type(exc).__name__
    text = f"MySQL {where(dsn)}: {action} failed: {reason}"
    if dsn.password:
        text = text.replace(dsn.password, "***")
    return text


def is_connection_lost(exc: BaseException) -> bool:
    """Whether a driver error means the connection broke (DBUtils may then reconnect)."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    args = getattr(exc, "args", ())
    return bool(args) and args[0] in CONNECTION_LOST


@contextlib.contextmanager
def translated(dsn: MysqlDsn, action: str) -> Iterator[None]:
    """Turn any driver or pool error raised inside into a ``StoreError``."""
    try:
        yield
    except StoreError:
        raise
    except (pymysql.MySQLError, PooledDBError, SteadyDBError, OSError) as exc:
        raise StoreError(describe(dsn, action, exc)) from None


@contextlib.contextmanager
def named_lock(cur: Any, name: str, timeout_s: int, busy: str) -> Iterator[None]:
    """Hold MySQL's ``GET_LOCK(name)`` (one server-wide name, cut to MySQL's 64 characters)
    for the block; raise ``StoreError(busy)`` when another session holds it ``timeout_s``."""
    name = name[:64]
    cur.execute("SELECT GET_LOCK(%s, %s)", (name, timeout_s))
    (got,) = cur.fetchone()
    if got != 1:
        raise StoreError(busy)
    try:
        yield
    finally:
        cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
        cur.fetchall()


class MysqlPool:
    """This process's DBUtils pool for one ``MysqlConf``, created on first use.

    A pool inherited through fork is dropped (and kept referenced, never
    closed: closing would send COM_QUIT down sockets the parent still uses),
    and the child builds its own.
    """

    _inherited: ClassVar[list[PooledDB]] = []

    def __init__(self, conf: MysqlConf) -> None:
        self.conf = conf
        self._pool: PooledDB | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _get(self) -> PooledDB:
        with self._lock:
            if self._pool is not None and self._pid != os.getpid():
                MysqlPool._inherited.append(self._pool)
                self._pool = None
            if self._pool is None:
                size = max(1, self.conf.pool_size)
                # autocommit + reset=False: a read is its own statement, with no
                # transaction to roll back when the connection goes back to the
                # pool; a write is an explicit transaction (begin) that the pool
                # rolls back only if it was left open. One round trip fewer per use.
                self._pool = PooledDB(
                    creator=lambda: open_connection(self.conf, autocommit=True),
                    maxcached=size, maxconnections=size, blocking=True, reset=False, ping=1,
                    isfatal=is_connection_lost,
                )  # fmt: skip
                self._pid = os.getpid()
            return self._pool

    @contextlib.contextmanager
    def cursor(self, action: str, *, write: bool = False) -> Iterator[pymysql.cursors.Cursor]:
        """A pooled cursor; errors inside become StoreError naming ``action``.

        A write runs in one transaction, committed when the block ends without
        error, rolled back by the pool otherwise. A read runs in autocommit:
        each statement sees the latest committed data, and nothing is left
        open when the connection goes back to the pool.
        """
        with translated(self.conf.dsn, action):
            conn = self._get().connection()
            try:
                if write:  # BEGIN; also stops DBUtils replaying statements mid-transaction
                    conn.begin()
                with conn.cursor() as cur:
                    yield cur
                if write:
                    conn.commit()
            finally:
                conn.close()  # back to the pool; an unfinished write is rolled back

    def close(self) -> None:
        """Close this process's pooled connections (a later ``cursor`` reopens them)."""
        with self._lock:
            pool, self._pool = self._pool, None
            mine = self._pid == os.getpid()
        if pool is not None and mine:
            with contextlib.suppress(Exception):
                pool.close()
