"""Loading avatars fast, and reading back what the service did with them.

Rows go in as multi-row INSERTs of literal values built here from ints and
epoch seconds only (nothing from outside), in one transaction per chunk:
about 50–100 k rows/s on a 2-core box, so a million load in well under a
minute. DATETIMEs are written in UTC, the zone the benchmark's DSN names.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import pymysql

from me2_devkit.bench.env import Stage
from me2_scheduler.chunking import chunks
from me2_scheduler.storage import reconcile

INSERT_CHUNK = 5000
INSERT_HEAD = (
    "INSERT INTO avatar_schedules (avatar_id, status, next_schedule_time, schedule_count,"
    " failed_count, version, created_at, updated_at) VALUES "
)


@functools.lru_cache(maxsize=200_000)
def utc_literal(epoch: int) -> str:
    """A DATETIME literal for whole epoch seconds, in UTC."""
    return time.strftime("'%Y-%m-%d %H:%M:%S'", time.gmtime(epoch))


def insert_schedules(conn: pymysql.Connection, rows: Iterable[tuple[int, int]]) -> int:
    """Insert active schedules ``(avatar_id, due epoch s)``; return how many.

    Raises pymysql errors (a benchmark failure, not a service one).
    """
    total = 0
    with conn.cursor() as cur:
        for batch in chunks(rows, INSERT_CHUNK):
            values = ",".join(
                f"({int(avatar_id)},'active',{utc_literal(int(due))},0,0,0,NOW(),NOW())"
                for avatar_id, due in batch
            )
            cur.execute("BEGIN")
            cur.execute(INSERT_HEAD + values)
            cur.execute("COMMIT")
            total += len(batch)
    return total


def rebuild_index(stage: Stage) -> int:
    """Rebuild the stage's Redis index from MySQL, as ``me2-scheduler rebuild-index`` does."""
    return reconcile.rebuild(stage.store, stage.index)


def verify_index(stage: Stage) -> int:
    """Verify the index against MySQL (no repair); return how many differences it found."""
    return reconcile.Verifier(stage.store, stage.index).run().differences


def history_count(conn: pymysql.Connection) -> int:
    """Rows in ``avatar_schedule_history``."""
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM avatar_schedule_history")
        (count,) = cur.fetchone()
    return int(count)


def wait_for_history(
    stage: Stage, expected: int, deadline_s: float, poll_s: float = 0.05
) -> tuple[float, int]:
    """Poll until ``expected`` history rows exist; return (epoch s when seen, count).

    Stops at the deadline with fewer (the caller reports the shortfall).
    """
    conn = stage.mysql()
    try:
        deadline = time.monotonic() + deadline_s
        count = 0
        while time.monotonic() < deadline:
            count = history_count(conn)
            if count >= expected:
                return time.time(), count
            if stage.service is not None and not stage.service.process.alive():
                break
            time.sleep(poll_s)
        return time.time(), count
    finally:
        conn.close()


@dataclass(frozen=True)
class Dispatches:
    """The history of one run: start times (epoch s, ms precision), lags and outcomes."""

    starts: list[float]
    lags_ms: list[int]
    outcomes: dict[str, int]

    @property
    def count(self) -> int:
        return len(self.starts)


def read_dispatches(stage: Stage) -> Dispatches:
    """Every history row's start (planned + lag_ms, to the millisecond), lag and outcome.

    ``started_time`` itself is whole seconds; ``lag_ms`` is measured from the
    planned time (whole seconds too), so planned + lag gives the start to the ms.
    """
    conn = stage.mysql()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT UNIX_TIMESTAMP(planned_time), lag_ms, outcome FROM avatar_schedule_history"
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    starts = [float(planned) + lag / 1000 for planned, lag, _ in rows if lag is not None]
    outcomes: dict[str, int] = {}
    for _, _, outcome in rows:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return Dispatches(
        sorted(starts), sorted(lag for _, lag, _ in rows if lag is not None), outcomes
    )


def percentile(sorted_values: list[float] | list[int], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


def table_bytes(conn: pymysql.Connection, database: str, table: str) -> int:
    """data_length + index_length of ``table`` after ANALYZE (fresh statistics)."""
    with conn.cursor() as cur:
        cur.execute(f"ANALYZE TABLE `{database}`.`{table}`")
        cur.fetchall()
        cur.execute(
            "SELECT data_length + index_length FROM information_schema.TABLES"
            " WHERE table_schema = %s AND table_name = %s",
            (database, table),
        )
        (size,) = cur.fetchone()
    return int(size or 0)
