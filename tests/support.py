"""Helpers every kind of test uses: waiting with a deadline, the time now, a hand-moved
clock, servers for fixtures, scratch databases, MySQL settings and bulk rows, and the
service's config files.

Fixtures live in ``conftest.py`` and the ``fixtures_*.py`` modules it loads;
this module holds plain functions and classes only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, Generic, Protocol, TypeVar

import pymysql
import pytest

from me2_devkit.testing.configs import service_config, write_config
from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.chunking import chunks
from me2_scheduler.clock import utc_now
from me2_scheduler.config import MysqlConf, MysqlDsn

__all__ = [
    "FakeClock",
    "insert_schedules",
    "mysql_conf",
    "run_together",
    "scratch_database",
    "service_config",
    "serving",
    "this_second",
    "wait_until",
    "write_config",
]

T = TypeVar("T")
POLL_S = 0.05
SCHEDULE_COLUMNS = ("avatar_id", "status", "next_schedule_time", "pause_reason")
_database_seq = itertools.count(1)


def wait_until(check: Callable[[], T], deadline_s: float, what: str) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    Fails the test, naming ``what``, when ``deadline_s`` seconds pass first.
    """
    deadline = time.monotonic() + deadline_s
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(POLL_S)
    return value


def this_second() -> datetime:
    """The current UTC time to the whole second (the resolution MySQL keeps)."""
    return utc_now().replace(microsecond=0)


def run_together(*calls: Callable[[], T], deadline_s: float = 120) -> list[T]:
    """Run each call in a thread of its own, all released at once; their results.

    The results come in the order the calls finished; a call still running at
    the deadline, or one that raised, has none (the caller counts them).
    """
    start = threading.Barrier(len(calls))
    results: list[T] = []

    def run(call: Callable[[], T]) -> None:
        start.wait(deadline_s)
        results.append(call())

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline_s)
    return results


class FakeClock(Generic[T]):
    """A clock the test moves by hand: calling it returns ``now``."""

    def __init__(self, now: T) -> None:
        self.now = now

    def __call__(self) -> T:
        return self.now

    def advance(self, step: Any) -> None:
        """Move the clock on by ``step`` (seconds, or a timedelta for a datetime clock)."""
        self.now += step


class _Server(Protocol):
    def start(self) -> Any: ...

    def stop(self) -> Any: ...


S = TypeVar("S", bound=_Server)


def serving(server: S) -> Iterator[S]:
    """Start ``server``, yield it and stop it after: the body of a server fixture."""
    started = server.start()
    try:
        yield started
    finally:
        started.stop()


@contextlib.contextmanager
def scratch_database(mariadb: MariaDBServer, prefix: str = "t") -> Iterator[str]:
    """A fresh, empty database on ``mariadb``, dropped on the way out."""
    name = f"{prefix}{os.getpid()}_{next(_database_seq)}"
    mariadb.create_database(name)
    try:
        yield name
    finally:
        mariadb.drop_database(name)


def mysql_conf(mariadb: MariaDBServer, database: str, **dsn: object) -> MysqlConf:
    """The store's settings for ``database`` as root; ``dsn`` overrides DSN fields (``loc``)."""
    fields = {"user": "root", "host": "127.0.0.1", "port": mariadb.port, "database": database}
    fields.update(dsn)
    return MysqlConf(data_source=mariadb.dsn(database), dsn=MysqlDsn(**fields, timeout_s=5))


def insert_schedules(
    mariadb: MariaDBServer, database: str, rows: Iterable[tuple], *, chunk: int = 10_000
) -> None:
    """Insert ``(avatar_id, status, next_schedule_time[, pause_reason])`` rows in bulk.

    A naive time is written as it is (MySQL holds UTC here); an aware one as UTC.
    """
    conn = pymysql.connect(
        host="127.0.0.1", port=mariadb.port, user="root", database=database, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            for batch in chunks((_stored(row) for row in rows), chunk):
                width = len(batch[0])
                columns, marks = ", ".join(SCHEDULE_COLUMNS[:width]), ", ".join(["%s"] * width)
                statement = f"INSERT INTO avatar_schedules ({columns}) VALUES ({marks})"
                cur.executemany(statement, batch)
    finally:
        conn.close()


def _stored(row: tuple) -> tuple:
    avatar_id, status, due, *rest = row
    if due.tzinfo is not None:
        due = due.astimezone(timezone.utc).replace(tzinfo=None)
    return (avatar_id, status, due, *rest)
