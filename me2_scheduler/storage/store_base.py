"""What every table of the MySQL store shares: its DSN, its pool, its zone, its clock.

One connection pool per process (``mysql_conn.MysqlPool``), filled on first
use in the process that uses it (never at import, never inherited through
fork); every wait on MySQL is bounded by the DSN's timeouts and by the
deadline of the call in progress. Every driver error leaves as
``StoreError`` (see ``mysql_conn``); times in and out are aware datetimes
(see ``rows``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from me2_scheduler.clock import utc_now
from me2_scheduler.config import MysqlConf
from me2_scheduler.storage.mysql_conn import MysqlPool, where, zone
from me2_scheduler.storage.rows import Cursor, from_db


class StoreBase:
    """The connection side of the store. Thread-safe; one instance per process.

    ``clock`` stamps ``created_at``/``updated_at`` (injectable for tests);
    ``use_timeout_s`` bounds each use of a connection, ``idle_s`` how long the
    server keeps one of its sessions waiting (``MysqlPool``). Constructing a
    store opens no connection.
    """

    def __init__(
        self,
        conf: MysqlConf,
        *,
        clock: Callable[[], datetime] = utc_now,
        use_timeout_s: float | None = None,
        idle_s: int | None = None,
    ) -> None:
        self.conf = conf
        self._dsn = conf.dsn
        self._loc = zone(conf.dsn.loc)
        self._clock = clock
        self._pool = MysqlPool(conf, use_timeout_s, idle_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({where(self._dsn)}, loc={self._dsn.loc})"

    def _cursor(self, action: str, *, write: bool = False) -> AbstractContextManager[Cursor]:
        return self._pool.cursor(action, write=write)

    def ping(self) -> None:
        """Check that MySQL answers; raise StoreError if not."""
        with self._cursor("ping") as cur:
            cur.execute("SELECT 1")
            cur.fetchall()

    def server_time(self) -> datetime:
        """The database's clock (``NOW()`` in the session zone) as an aware datetime.

        Raises StoreError.
        """
        with self._cursor("reading the server clock") as cur:
            cur.execute("SELECT NOW()")
            (now,) = cur.fetchone()
        return from_db(now, self._loc)

    def close(self) -> None:
        """Close this process's pooled connections (reopened if the store is used again)."""
        self._pool.close()
