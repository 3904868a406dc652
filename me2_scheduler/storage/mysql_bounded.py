"""A pymysql connection and cursor whose every network wait ends in time.

``BoundedConnection`` is established within its connect timeout (handshake
and session set-up included), then bounds each read and write by its own
timeouts and by the deadline of the call in progress
(``me2_scheduler.deadline``). ``BoundedCursor`` re-arms those bounds before
each statement, so a handler's later statements get only what is left of its
deadline. ``storage.mysql_conn`` builds them and pools them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pymysql

from me2_scheduler import deadline

DEADLINE_PASSED = "the call's deadline passed before MySQL answered"


class BoundedCursor(pymysql.cursors.Cursor):
    """A cursor that bounds each statement by the deadline of the call in progress."""

    def execute(self, query: Any, args: Any = None) -> int:
        """Run one statement; raise ``TimeoutError`` at once if the deadline has passed."""
        connection = self.connection
        if isinstance(connection, BoundedConnection):
            connection.arm()
        return super().execute(query, args)


class BoundedConnection(pymysql.connections.Connection):
    """A pymysql connection whose every network wait ends in time.

    Established within ``connect_timeout`` (handshake and session set-up
    included: a healthy server greets at once); then each read and write is
    bounded by ``read_timeout_s``/``write_timeout_s``, cut to the deadline by
    ``arm``. PyMySQL applies ``_read_timeout``/``_write_timeout`` to its socket
    before each read and write, which is what ``arm`` sets.

    Raises ``TimeoutError`` when the deadline has already passed, and
    pymysql errors when the server cannot be reached.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.read_timeout_s: float | None = kwargs.get("read_timeout")
        self.write_timeout_s: float | None = kwargs.get("write_timeout")
        if deadline.passed():
            raise TimeoutError(DEADLINE_PASSED)
        with deadline.within(kwargs.get("connect_timeout")):  # the whole handshake
            establish_s = deadline.cut(None)
            kwargs |= {"connect_timeout": establish_s, "read_timeout": establish_s}
            kwargs |= {"write_timeout": establish_s}
            kwargs.setdefault("cursorclass", BoundedCursor)
            super().__init__(**kwargs)
        self.arm()

    # PyMySQL sets ``_read_timeout``/``_write_timeout`` on the socket before each
    # packet; under a deadline each packet gets only what is left of it, so a
    # reply in many packets (a handshake, a result set) cannot add up past it.

    def _read_packet(self, *args: Any, **kwargs: Any) -> Any:
        self._read_timeout = deadline.cut(self._read_timeout)
        return super()._read_packet(*args, **kwargs)

    def _write_bytes(self, data: bytes) -> None:
        self._write_timeout = deadline.cut(self._write_timeout)
        super()._write_bytes(data)

    def arm(self) -> None:
        """Bound the next reads and writes by the timeouts and the deadline, if any.

        Raises ``TimeoutError`` when the deadline has passed (nothing is sent).
        """
        if deadline.passed():
            raise TimeoutError(DEADLINE_PASSED)
        self._bound()

    def _bound(self) -> None:
        self._read_timeout = deadline.cut(self.read_timeout_s)
        self._write_timeout = deadline.cut(self.write_timeout_s)

    def answers_ping(self, timeout_s: float) -> bool:
        """Whether the server answers a ping within ``timeout_s`` (cut to the deadline).

        A False connection is broken or silent: the caller discards it.
        """
        self._read_timeout = self._write_timeout = deadline.cut(timeout_s)
        try:
            self.ping(reconnect=False)
        except (pymysql.MySQLError, OSError):
            return False
        self._bound()
        return True

    @contextlib.contextmanager
    def reads_at_least(self, seconds: float) -> Iterator[None]:
        """Let reads inside the block wait ``seconds`` (a server-side wait such as
        GET_LOCK's) when the read timeout is shorter; the deadline still applies."""
        saved = self.read_timeout_s
        if saved is not None and saved < seconds:
            self.read_timeout_s = seconds
        try:
            yield
        finally:
            self.read_timeout_s = saved
            self._bound()
