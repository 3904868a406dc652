"""What the console's pages read, each read bounded whatever the number of avatars.

At a million avatars no page load may scan a table. So:

- queue sizes, "due in the next minute/hour" and the due timeline are Redis
  ``ZCARD``/``ZCOUNT``/``LLEN`` on the index (O(log n) each, one pipeline);
- the active count is the index's ``due`` + ``inflight`` (every active avatar
  is in exactly one of them, DESIGN §2.3);
- paused and disabled counts are index range counts on
  ``idx_status_reason_avatar_id`` capped at ``COUNT_CAP`` (shown as "100000+"),
  so their cost is bounded even when most avatars are disabled;
- recent dispatches are the newest ``WINDOW_ROWS`` history rows of the last
  ``WINDOW_S`` seconds, read backwards on ``idx_started_time``;
- the paused list is a keyset page (``avatar_id > after``) on the same index.

The tests run ``EXPLAIN`` on every statement here against a real table.
Every method raises StoreError or RedisIndexError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from me2_scheduler.states import Outcome, PauseReason, Status
from me2_scheduler.storage.keys import Keys
from me2_scheduler.storage.mysql_conn import MysqlPool
from me2_scheduler.storage.redis_conn import RedisClient
from me2_scheduler.storage.rows import from_db, to_db
from me2_scheduler.storage.scripts import redis_errors

COUNT_CAP = 100_000
WINDOW_S = 300  # "the last minutes" of the overview
WINDOW_ROWS = 5000  # at most this many recent dispatches are read for it
PAGE_SIZE = 50
UNKNOWN = "unknown"  # paused before pause_reason existed (the Go original)
REASONS = (PauseReason.FAILURES, PauseReason.USER, UNKNOWN, "all")

_COUNT = "SELECT COUNT(*) FROM (SELECT 1 FROM avatar_schedules WHERE {where} LIMIT %s) AS capped"
_PAUSED_COLUMNS = "avatar_id, pause_reason, failed_count, last_error, last_failed_time, updated_at"


@dataclass(frozen=True)
class Count:
    """A count, or its cap when ``capped`` (there are more)."""

    value: int
    capped: bool = False


@dataclass(frozen=True)
class Queues:
    """The index at one instant (Redis TIME ``now``)."""

    now: float
    built: bool
    due: int
    overdue: int
    due_next_minute: int
    due_next_hour: int
    inflight: int
    ready: int

    @property
    def active(self) -> int:
        """Every active avatar is in due or in flight."""
        return self.due + self.inflight


@dataclass(frozen=True)
class Recent:
    """Dispatches of the last ``seconds`` (the newest ``WINDOW_ROWS`` at most)."""

    seconds: float
    success: int
    failure: int
    skipped: int
    lag_p99_ms: int | None
    capped: bool

    @property
    def per_minute(self) -> float:
        """Dispatches made (success or failure) per minute."""
        return (self.success + self.failure) * 60 / self.seconds if self.seconds else 0.0

    @property
    def success_rate(self) -> float | None:
        """Successes among dispatches made, None when none was made."""
        made = self.success + self.failure
        return self.success / made if made else None


@dataclass(frozen=True)
class PausedRow:
    """One paused avatar as the paused list shows it."""

    avatar_id: int
    pause_reason: str
    failed_count: int
    last_error: str
    last_failed_time: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class PausedPage:
    """One page of the paused list; ``next_after`` is the cursor of the next (None: last)."""

    rows: list[PausedRow]
    next_after: int | None
    total: Count


@dataclass(frozen=True)
class Timeline:
    """Avatars due per minute from ``start`` (epoch s, a whole minute); ``late`` before it."""

    start: int
    late: int
    per_minute: list[int]


def percentile(values: list[int], pct: float) -> int | None:
    """The nearest-rank ``pct`` percentile of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def like_pattern(text: str) -> str:
    """``%text%`` for LIKE, with the user's ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, eq=False)  # compared by identity, as before
class Reads:
    """The console's reads over one MySQL pool and the index's Redis client."""

    pool: MysqlPool
    loc: tzinfo
    client: RedisClient
    keys: Keys
    grace_s: float

    # -- MySQL ------------------------------------------------------------------

    def _capped_count(self, cur: Any, where: str, params: list[Any]) -> Count:
        cur.execute(_COUNT.format(where=where), [*params, COUNT_CAP + 1])
        (found,) = cur.fetchone()
        return Count(min(found, COUNT_CAP), found > COUNT_CAP)

    def status_counts(self) -> dict[str, Count]:
        """Paused (all, by failures, by users) and disabled avatars, each capped."""
        paused = [Status.PAUSED]
        with self.pool.cursor("counting schedules") as cur:
            return {
                "paused": self._capped_count(cur, "status = %s", paused),
                "auto_paused": self._capped_count(
                    cur, "status = %s AND pause_reason = %s", [*paused, PauseReason.FAILURES]
                ),
                "disabled": self._capped_count(cur, "status = %s", [Status.DISABLED]),
            }

    def recent(self, now: datetime) -> Recent:
        """The dispatches of the last ``WINDOW_S`` seconds (newest ``WINDOW_ROWS`` at most)."""
        since = to_db(now - timedelta(seconds=WINDOW_S), self.loc)
        with self.pool.cursor("reading recent dispatches") as cur:
            cur.execute(
                "SELECT outcome, lag_ms, started_time FROM avatar_schedule_history"
                " WHERE started_time >= %s ORDER BY started_time DESC LIMIT %s",
                (since, WINDOW_ROWS),
            )
            rows = cur.fetchall()
        capped = len(rows) == WINDOW_ROWS
        seconds = float(WINDOW_S)
        if capped:  # the window the rows cover, not the one asked for
            oldest = from_db(rows[-1][2], self.loc)
            seconds = max(1.0, (now - oldest).total_seconds())
        outcomes = [outcome for outcome, _, _ in rows]
        return Recent(
            seconds=seconds,
            success=outcomes.count(Outcome.SUCCESS),
            failure=outcomes.count(Outcome.FAILURE),
            skipped=outcomes.count(Outcome.SKIPPED),
            lag_p99_ms=percentile([lag for _, lag, _ in rows if lag is not None], 99),
            capped=capped,
        )

    def paused_page(self, reason: str, text: str, after: int, limit: int = PAGE_SIZE) -> PausedPage:
        """Paused avatars above ``after`` by avatar_id: ``reason`` one of ``REASONS``,
        ``text`` a piece of their last error ("" for any)."""
        where, params = "status = %s", [Status.PAUSED]
        if reason == UNKNOWN:
            where += " AND pause_reason IS NULL"
        elif reason != "all":
            where, params = where + " AND pause_reason = %s", [*params, reason]
        if text:
            where, params = where + " AND last_error LIKE %s", [*params, like_pattern(text)]
        with self.pool.cursor("listing paused schedules") as cur:
            cur.execute(
                f"SELECT {_PAUSED_COLUMNS} FROM avatar_schedules WHERE {where}"
                " AND avatar_id > %s ORDER BY avatar_id LIMIT %s",
                [*params, after, limit + 1],
            )
            raw = cur.fetchall()
            total = self._capped_count(cur, where, params)
        rows = [self._paused_row(values) for values in raw[:limit]]
        next_after = rows[-1].avatar_id if len(raw) > limit else None
        return PausedPage(rows, next_after, total)

    def _paused_row(self, values: tuple[Any, ...]) -> PausedRow:
        avatar_id, reason, failed, error, failed_at, updated = values
        return PausedRow(
            avatar_id=avatar_id,
            pause_reason=reason or UNKNOWN,
            failed_count=failed or 0,
            last_error=error or "",
            last_failed_time=from_db(failed_at, self.loc),
            updated_at=from_db(updated, self.loc),
        )

    # -- Redis ------------------------------------------------------------------

    def queues(self) -> Queues:
        """Queue sizes and due counts at one Redis TIME (two round trips)."""
        k = self.keys
        with redis_errors("reading the queue sizes"):
            seconds, micros = self.client.time()
            now = seconds + micros / 1_000_000
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(k.meta)
            pipe.zcard(k.due)
            pipe.zcount(k.due, "-inf", now - self.grace_s)
            pipe.zcount(k.due, f"({now}", now + 60)
            pipe.zcount(k.due, f"({now}", now + 3600)
            pipe.zcard(k.inflight)
            pipe.llen(k.ready)
            built, *sizes = pipe.execute()
        due, overdue, minute, hour, inflight, ready = (int(size) for size in sizes)
        return Queues(now, bool(built), due, overdue, minute, hour, inflight, ready)

    def timeline(self, hours: int) -> Timeline:
        """Avatars due in each minute of the next ``hours`` hours (one pipeline)."""
        with redis_errors("reading the due timeline"):
            seconds, _ = self.client.time()
            start = int(seconds) // 60 * 60
            pipe = self.client.pipeline(transaction=False)
            pipe.zcount(self.keys.due, "-inf", f"({start}")
            for minute in range(hours * 60):
                low = start + minute * 60
                pipe.zcount(self.keys.due, low, f"({low + 60}")
            late, *per_minute = pipe.execute()
        return Timeline(start, int(late), [int(count) for count in per_minute])

    def place(self, avatar_id: int) -> tuple[float | None, float | None]:
        """The avatar's due time and lease expiry in the index (epoch s, None: not there)."""
        with redis_errors("reading an avatar's place in the index"):
            pipe = self.client.pipeline(transaction=True)
            pipe.zscore(self.keys.due, avatar_id)
            pipe.zscore(self.keys.inflight, avatar_id)
            due, lease = pipe.execute()
        return due, lease

    def index_meta(self) -> dict[str, str]:
        """The index's ``meta`` hash (version, built_at, rows); empty when not built."""
        with redis_errors("reading the index meta"):
            return dict(self.client.hgetall(self.keys.meta))
