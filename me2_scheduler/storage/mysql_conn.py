"""Connections to MySQL: connect arguments and timeouts, session time zone, error translation.

One place builds pymysql's connect arguments from ``MysqlConf.dsn`` and turns
every driver error into a ``StoreError`` whose text names the server and what
failed, and never the password; and holds this process's pool.

Every wait on the network is bounded. A connection is established (TCP
connect, handshake, session set-up) within the DSN's ``timeout``; each read
and write within ``readTimeout``/``writeTimeout`` (defaults below when the DSN
has none); and all of them within the deadline of the call in progress, if
any (``me2_scheduler.deadline``). PyMySQL closes the socket of a connection
whose read or write failed or timed out, so such a connection is never used
again.

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
import math
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pymysql

from me2_scheduler import deadline
from me2_scheduler.clock import utc_now
from me2_scheduler.config import MysqlConf, MysqlDsn
from me2_scheduler.dsn import io_timeouts
from me2_scheduler.errors import ConfigError, StoreError
from me2_scheduler.storage.mysql_bounded import DEADLINE_PASSED, BoundedConnection

# Client-side error codes that mean "the connection is gone", as opposed to a
# statement that failed (deadlock, lock wait timeout) on a healthy connection.
CONNECTION_LOST = frozenset({0, 2003, 2006, 2013, 2055})
SERVER_LOST = 2013  # CR_SERVER_LOST

LOCK_WAIT_MARGIN_S = 10.0  # beyond a GET_LOCK's own timeout, for the server's answer
IDLE_MARGIN_S = 0.5  # a pooled connection idle this near the server's limit is not reused


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
    offset = (now or utc_now()).astimezone(loc).utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def connect_args(dsn: MysqlDsn, *, ddl: bool = False) -> dict[str, Any]:
    """pymysql's keyword arguments for ``dsn`` (autocommit off, no time zone yet)."""
    read_s, write_s = io_timeouts(dsn, ddl=ddl)
    args: dict[str, Any] = {
        "user": dsn.user,
        "password": dsn.password,
        "database": dsn.database or None,
        "charset": dsn.charset or "utf8mb4",
        "connect_timeout": dsn.timeout_s,
        "read_timeout": read_s,
        "write_timeout": write_s,
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


def idle_session_s(lease_s: float) -> int:
    """How long the server keeps a session idle for a role holding leases of ``lease_s``:
    half a lease, in whole seconds (MySQL's ``wait_timeout``), at least one."""
    return max(1, math.ceil(lease_s / 2))


def session_setup(loc: tzinfo, idle_s: int | None = None) -> str:
    """The statement a new session runs first: its time zone, and its idle limit if any.

    Portable SQL: MySQL 8 and MariaDB both take several session assignments in one SET.
    """
    sql = f"SET time_zone = '{session_offset(loc)}'"
    return sql if idle_s is None else f"{sql}, wait_timeout = {int(idle_s)}"


def open_connection(
    conf: MysqlConf, *, ddl: bool = False, idle_s: int | None = None, **extra: Any
) -> pymysql.connections.Connection:
    """A new connection (``BoundedConnection``) with the session time zone set to ``loc``'s offset.

    ``ddl``: reads default to ``dsn.DDL_READ_TIMEOUT_S`` (see ``dsn.io_timeouts``).
    ``idle_s``: the server drops the session once it has waited that long for a
    statement (``wait_timeout``), in or out of a transaction.
    Raises pymysql errors and ``TimeoutError`` untranslated; callers wrap it in
    ``translated``.
    """
    setup = session_setup(zone(conf.dsn.loc), idle_s)
    args = {**connect_args(conf.dsn, ddl=ddl), "init_command": setup}
    return BoundedConnection(**(args | extra))


def where(dsn: MysqlDsn) -> str:
    """The server and database an error message names: ``127.0.0.1:3306/me2``."""
    server = dsn.unix_socket or f"{dsn.host}:{dsn.port}"
    return f"{server}/{dsn.database}"


def reason(exc: BaseException) -> str:
    """What went wrong, in words: the driver's message and code, never an empty one.

    PyMySQL raises ``InterfaceError(0, '')`` for a statement on a connection
    whose socket it already closed, and words a read timeout as a lost
    connection; each becomes a sentence of its own.
    """
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        code, message = args[0], str(args[1]).strip()
        if code == SERVER_LOST and isinstance(exc.__context__, TimeoutError):
            # PyMySQL says "Lost connection ... during query (timed out)", also
            # for a handshake: the server was there, and silent.
            return f"no answer from MySQL in time, connection dropped ({code})"
        if message:
            return f"{message} ({code})"
        if is_connection_lost(exc):
            return f"connection lost: the connection was already closed ({type(exc).__name__})"
        return f"{type(exc).__name__} {code} without a message"
    return str(exc).strip() or type(exc).__name__


def describe(dsn: MysqlDsn, action: str, exc: BaseException) -> str:
    """One sentence for a driver error, with the password scrubbed should it appear."""
    text = f"MySQL {where(dsn)}: {action} failed: {reason(exc)}"
    if dsn.password:
        text = text.replace(dsn.password, "***")
    return text


def is_connection_lost(exc: BaseException) -> bool:
    """Whether a driver error means the connection broke (it must not be used again)."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    args = getattr(exc, "args", ())
    return bool(args) and args[0] in CONNECTION_LOST


@contextlib.contextmanager
def translated(dsn: MysqlDsn, action: str) -> Iterator[None]:
    """Turn any driver or network error raised inside into a ``StoreError``."""
    try:
        yield
    except StoreError:
        raise
    except (pymysql.MySQLError, OSError) as exc:
        raise StoreError(describe(dsn, action, exc)) from None


@contextlib.contextmanager
def named_lock(cur: Any, name: str, timeout_s: int, busy: str) -> Iterator[None]:
    """Hold MySQL's ``GET_LOCK(name)`` (one server-wide name, cut to MySQL's 64 characters)
    for the block; raise ``StoreError(busy)`` when another session holds it ``timeout_s``."""
    name = name[:64]
    connection = cur.connection
    waiting: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if isinstance(connection, BoundedConnection):  # the server answers after up to timeout_s
        waiting = connection.reads_at_least(timeout_s + LOCK_WAIT_MARGIN_S)
    with waiting:
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
    """This process's pool of at most ``pool_size`` connections for one ``MysqlConf``.

    A connection goes back to the pool only from a use that left it sound. A
    network failure or a timeout (PyMySQL has then closed its socket), or a
    failed write whose rollback failed too, discards it; the next use opens a
    new one, so the pool recovers by itself once the server answers again.
    An idle connection is pinged when taken, bounded by the connect timeout (a
    server restart leaves idle connections dead): one that fails discards
    every idle one, as old as it. Waiting for a free connection ends by the
    call's deadline, else after ``wait_s``.

    ``use_timeout_s`` bounds each use as a whole (taking a connection, every
    statement, the commit), on top of the DSN's per-read timeouts and the
    call's deadline: a role that must get on with its work gives up on a
    connection that went silent mid-use this soon, not after a whole read
    timeout. None: no such bound.

    ``idle_s`` is the other side of it, kept by the server: a session that
    waits that long for its next statement is dropped, and its transaction
    rolled back. A process frozen mid-transaction (SIGSTOP, a paused VM) so
    gives up its row locks in ``idle_s``, not when it wakes; a use never
    pauses that long between statements. A pooled connection idle for nearly
    that long is closed, not pinged. None: the server's default.

    A pool inherited through fork is dropped (its connections kept referenced,
    never closed: closing would send COM_QUIT down sockets the parent still
    uses), and the child opens its own.
    """

    _inherited: ClassVar[list[list[tuple[BoundedConnection, float]]]] = []

    def __init__(
        self, conf: MysqlConf, use_timeout_s: float | None = None, idle_s: int | None = None
    ) -> None:
        self.conf = conf
        self.use_timeout_s = use_timeout_s
        self.idle_s = idle_s
        self.size = max(1, conf.pool_size)
        # Every holder is bounded by its own timeouts, so a wait longer than one
        # whole connect-and-statement means the pool is stuck, not just busy.
        self.wait_s = conf.dsn.timeout_s + io_timeouts(conf.dsn)[0]
        self._lock = threading.Lock()
        self._idle: list[tuple[BoundedConnection, float]] = []  # with when it went idle
        self._slots = threading.BoundedSemaphore(self.size)
        self._pid = os.getpid()

    @contextlib.contextmanager
    def cursor(self, action: str, *, write: bool = False) -> Iterator[pymysql.cursors.Cursor]:
        """A pooled cursor; errors inside become StoreError naming ``action``.

        A write runs in one transaction, committed when the block ends without
        error, rolled back otherwise. A read runs in autocommit: each statement
        sees the latest committed data, and nothing is left open when the
        connection goes back to the pool.
        """
        with translated(self.conf.dsn, action), deadline.within(self.use_timeout_s):
            conn = self._take()
            try:
                if write:
                    conn.begin()
                with conn.cursor() as cur:
                    yield cur
                if write:
                    conn.commit()
            except BaseException as exc:
                self._give_back(conn, sound=_sound_after(conn, exc, write=write))
                raise
            self._give_back(conn, sound=conn.open)

    def close(self) -> None:
        """Close this process's idle connections (a later ``cursor`` opens new ones)."""
        with self._lock:
            self._adopt_after_fork()
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            _close_quietly(conn)

    def _take(self) -> BoundedConnection:
        """A connection for one use: a live idle one, else a new one.

        Raises ``TimeoutError`` when no connection frees up in time, and the
        errors of ``open_connection``.
        """
        with self._lock:
            self._adopt_after_fork()
            slots = self._slots
        left = deadline.remaining()
        wait_s = self.wait_s if left is None else max(0.0, left)
        if not slots.acquire(timeout=wait_s):
            raise TimeoutError(f"all {self.size} pooled connections stayed busy for {wait_s:.3g}s")
        if deadline.passed():
            slots.release()
            raise TimeoutError(DEADLINE_PASSED)
        try:
            return self._idle_or_new()
        except BaseException:
            slots.release()
            raise

    def _idle_or_new(self) -> BoundedConnection:
        with self._lock:
            conn, expired = self._fresh_idle()
        for old in expired:
            _close_quietly(old)
        if conn is not None:
            if conn.answers_ping(self.conf.dsn.timeout_s):
                return conn
            with self._lock:
                stale, self._idle = self._idle, []
            for other in [conn, *(c for c, _ in stale)]:
                _close_quietly(other)
        opened = open_connection(self.conf, idle_s=self.idle_s, autocommit=True)
        return opened  # type: ignore[return-value]

    def _fresh_idle(self) -> tuple[BoundedConnection | None, list[BoundedConnection]]:
        """The newest idle connection the server still keeps, and those taken off the pool
        for having been idle too near ``idle_s``, to close (call under the lock)."""
        expired = []
        while self._idle:
            conn, since = self._idle.pop()
            if self.idle_s is None or time.monotonic() - since < self.idle_s - IDLE_MARGIN_S:
                return conn, expired
            expired.append(conn)
        return None, expired

    def _give_back(self, conn: BoundedConnection, *, sound: bool) -> None:
        with self._lock:
            keep = sound and self._pid == os.getpid()
            if keep:
                self._idle.append((conn, time.monotonic()))
            slots = self._slots
        if not keep:
            _close_quietly(conn)
        slots.release()

    def _adopt_after_fork(self) -> None:
        """In a forked child, drop the parent's connections and slots (call under the lock)."""
        if self._pid != os.getpid():
            MysqlPool._inherited.append(self._idle)
            self._idle = []
            self._slots = threading.BoundedSemaphore(self.size)
            self._pid = os.getpid()


def _sound_after(conn: BoundedConnection, exc: BaseException, *, write: bool) -> bool:
    """Whether a connection whose use raised ``exc`` may be used again (rolled back if a write)."""
    if not conn.open or is_connection_lost(exc):
        return False
    if write:
        try:
            conn.rollback()
        except (pymysql.MySQLError, OSError):
            return False
    return conn.open


def _close_quietly(conn: pymysql.connections.Connection) -> None:
    """Close a connection that is being discarded; a broken one is just let go."""
    if conn.open:
        with contextlib.suppress(Exception):
            conn.close()
