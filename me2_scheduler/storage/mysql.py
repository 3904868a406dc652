"""The MySQL store: ``avatar_schedules`` (the source of truth) and the dispatch history.

One DBUtils ``PooledDB`` per process, created on first use in the process
that uses it (never at import, never inherited through fork). Every driver
error leaves as ``StoreError`` (see ``mysql_conn``); every statement is
parameterised; times in and out are aware datetimes (see ``rows``).

State changes are guarded: ``transition`` updates only while the row still
has the status and version the caller read, and the ``record_*`` calls lock
the row, decide with ``policy`` and write in one transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

import pymysql

from me2_scheduler import policy
from me2_scheduler.config import MysqlConf
from me2_scheduler.errors import StoreError
from me2_scheduler.storage.mysql_conn import MysqlPool, open_connection, translated, where, zone
from me2_scheduler.storage.recording import Attempt, MissingRowError, record_attempts
from me2_scheduler.storage.rows import (
    HISTORY_SELECT,
    Cursor,
    HistoryEntry,
    Recorded,
    ScheduleRow,
    from_db,
    history_from_db,
    insert_history,
    select_schedule,
    select_schedules,
    to_db,
    update_schedule,
)

__all__ = ["Attempt", "HistoryEntry", "MysqlStore", "Recorded", "ScheduleRow"]

_STREAM_WRITE_TIMEOUT_S = 600  # a slow consumer of stream_active must not be cut at 60 s


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class MysqlStore:
    """Schedules and history in MySQL. Thread-safe; one instance per process.

    ``clock`` stamps ``created_at``/``updated_at`` (injectable for tests).
    Constructing a store opens no connection.
    """

    def __init__(self, conf: MysqlConf, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.conf = conf
        self._dsn = conf.dsn
        self._loc = zone(conf.dsn.loc)
        self._clock = clock
        self._pool = MysqlPool(conf)

    def __repr__(self) -> str:
        return f"MysqlStore({where(self._dsn)}, loc={self._dsn.loc})"

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

    # -- reads --------------------------------------------------------------

    def get(self, avatar_id: int) -> ScheduleRow | None:
        """The avatar's schedule, or None if it has none. Raises StoreError."""
        with self._cursor("reading a schedule") as cur:
            return select_schedule(cur, self._loc, avatar_id)

    def batch_get(self, avatar_ids: Sequence[int]) -> list[ScheduleRow]:
        """Schedules in the order of ``avatar_ids``, duplicates folded, unknown ids omitted.

        One query. Raises StoreError.
        """
        if not avatar_ids:
            return []
        with self._cursor("reading schedules") as cur:
            by_id = select_schedules(cur, self._loc, avatar_ids)
        return [by_id[avatar_id] for avatar_id in dict.fromkeys(avatar_ids) if avatar_id in by_id]

    def iter_active_ids(self, after_id: int, limit: int) -> list[int]:
        """Up to ``limit`` active avatar_ids greater than ``after_id``, ascending (keyset page).

        Raises StoreError.
        """
        with self._cursor("listing active avatars") as cur:
            cur.execute(
                "SELECT avatar_id FROM avatar_schedules WHERE status = %s AND avatar_id > %s"
                " ORDER BY avatar_id LIMIT %s",
                (policy.ACTIVE, after_id, limit),
            )
            return [avatar_id for (avatar_id,) in cur.fetchall()]

    def active_among(self, avatar_ids: Sequence[int]) -> set[int]:
        """Those of ``avatar_ids`` that are active (one query, ids only). Raises StoreError."""
        wanted = list(dict.fromkeys(avatar_ids))
        if not wanted:
            return set()
        marks = ", ".join(["%s"] * len(wanted))
        with self._cursor("reading active schedules") as cur:
            cur.execute(
                "SELECT avatar_id FROM avatar_schedules"
                f" WHERE status = %s AND avatar_id IN ({marks})",
                [policy.ACTIVE, *wanted],
            )
            return {avatar_id for (avatar_id,) in cur.fetchall()}

    def active_due_times(self, avatar_ids: Sequence[int]) -> dict[int, datetime]:
        """``next_schedule_time`` of those of ``avatar_ids`` that are active (one query).

        For checking the Redis index against MySQL. Raises StoreError.
        """
        wanted = list(dict.fromkeys(avatar_ids))
        if not wanted:
            return {}
        marks = ", ".join(["%s"] * len(wanted))
        with self._cursor("reading active schedules") as cur:
            cur.execute(
                "SELECT avatar_id, next_schedule_time FROM avatar_schedules"
                f" WHERE status = %s AND avatar_id IN ({marks})",
                [policy.ACTIVE, *wanted],
            )
            return {avatar_id: from_db(due, self._loc) for avatar_id, due in cur.fetchall()}

    def overdue(
        self, before: datetime, limit: int, after_id: int = 0
    ) -> list[tuple[int, datetime]]:
        """Active avatars due at or before ``before``: ``(avatar_id, next_schedule_time)``.

        The seed's scan (``next_schedule_time <= ? AND status = 'active'``, on
        ``idx_next_schedule_time``), paged by avatar_id after ``after_id``.
        Raises StoreError.
        """
        with self._cursor("listing overdue schedules") as cur:
            cur.execute(
                "SELECT avatar_id, next_schedule_time FROM avatar_schedules"
                " WHERE next_schedule_time <= %s AND status = %s AND avatar_id > %s"
                " ORDER BY avatar_id LIMIT %s",
                (to_db(before, self._loc), policy.ACTIVE, after_id, limit),
            )
            return [(avatar_id, from_db(due, self._loc)) for avatar_id, due in cur.fetchall()]

    def stream_active(self, batch_size: int = 10_000) -> Iterator[tuple[int, datetime]]:
        """Every active ``(avatar_id, next_schedule_time)``, ascending avatar_id, streamed.

        Runs one unbuffered query on a dedicated connection (not the pool), so
        a million rows are never held in memory; the connection closes when
        the iterator is exhausted or discarded. Raises StoreError.
        """
        action = "streaming active schedules"
        with translated(self._dsn, action):
            conn = open_connection(self.conf, cursorclass=pymysql.cursors.SSCursor)
        try:
            with translated(self._dsn, action):
                cur = conn.cursor()
                cur.execute("SET SESSION net_write_timeout = %s", (_STREAM_WRITE_TIMEOUT_S,))
                cur.execute(
                    "SELECT avatar_id, next_schedule_time FROM avatar_schedules"
                    " WHERE status = %s ORDER BY avatar_id",
                    (policy.ACTIVE,),
                )
                while batch := cur.fetchmany(batch_size):
                    for avatar_id, due in batch:
                        yield avatar_id, from_db(due, self._loc)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def history(self, avatar_id: int, limit: int, before_id: int = 0) -> list[HistoryEntry]:
        """The avatar's dispatches, newest first; ``before_id`` > 0 pages past that entry id.

        Raises StoreError.
        """
        sql = f"SELECT {HISTORY_SELECT} FROM avatar_schedule_history WHERE avatar_id = %s"
        params: list[Any] = [avatar_id]
        if before_id > 0:
            sql += " AND id < %s"
            params.append(before_id)
        params.append(limit)
        with self._cursor("reading dispatch history") as cur:
            cur.execute(sql + " ORDER BY id DESC LIMIT %s", params)
            return [history_from_db(raw, self._loc) for raw in cur.fetchall()]

    def counts_by_status(self) -> dict[str, int]:
        """How many schedules are in each status (every status present, 0 if none).

        Raises StoreError.
        """
        counts = dict.fromkeys(policy.STATUSES, 0)
        with self._cursor("counting schedules") as cur:
            cur.execute("SELECT status, COUNT(*) FROM avatar_schedules GROUP BY status")
            for status, count in cur.fetchall():
                if status is not None:
                    counts[status] = count
        return counts

    def auto_paused_count(self) -> int:
        """How many schedules were paused by consecutive failures. Raises StoreError."""
        with self._cursor("counting auto-paused schedules") as cur:
            cur.execute(
                "SELECT COUNT(*) FROM avatar_schedules WHERE status = %s AND pause_reason = %s",
                (policy.PAUSED, policy.PAUSED_BY_FAILURES),
            )
            (count,) = cur.fetchone()
        return count

    def paused_by_reason(self) -> dict[str, int]:
        """Paused schedules by ``pause_reason``: ``user``, ``failures`` and ``unknown``.

        ``unknown`` counts rows paused before the column existed (the Go
        original). Reads only the paused rows (on idx_status_avatar_id).
        Raises StoreError.
        """
        counts = dict.fromkeys((policy.PAUSED_BY_USER, policy.PAUSED_BY_FAILURES, "unknown"), 0)
        with self._cursor("counting paused schedules") as cur:
            cur.execute(
                "SELECT pause_reason, COUNT(*) FROM avatar_schedules WHERE status = %s"
                " GROUP BY pause_reason",
                (policy.PAUSED,),
            )
            for reason, count in cur.fetchall():
                counts[reason or "unknown"] += count
        return counts

    # -- writes -------------------------------------------------------------

    def create(self, avatar_id: int, next_time: datetime) -> ScheduleRow | None:
        """Create an active schedule due at ``next_time``; return it.

        Returns None, changing nothing, when the avatar already has a schedule
        (a concurrent create won): read it with ``get``. Raises StoreError.
        """
        now = to_db(self._clock(), self._loc)
        with self._cursor("creating a schedule", write=True) as cur:
            cur.execute(
                "INSERT IGNORE INTO avatar_schedules (avatar_id, status, next_schedule_time,"
                " schedule_count, failed_count, version, created_at, updated_at)"
                " VALUES (%s, %s, %s, 0, 0, 0, %s, %s)",
                (avatar_id, policy.ACTIVE, to_db(next_time, self._loc), now, now),
            )
            if cur.rowcount != 1:
                return None
            return select_schedule(cur, self._loc, avatar_id)

    def transition(
        self,
        avatar_id: int,
        *,
        expected_status: str,
        expected_version: int,
        new_status: str,
        next_time: datetime | None = None,
        reset_failures: bool = False,
        pause_reason: str | None = None,
    ) -> ScheduleRow | None:
        """Move the schedule to ``new_status`` if it still has the status and version read.

        ``next_time`` (if given) becomes ``next_schedule_time``; ``reset_failures``
        sets ``failed_count`` to 0. ``pause_reason`` is kept only for ``paused``
        (default ``user``) and cleared otherwise. Returns the new row, or None
        when the guard failed (the row moved on), changing nothing then.
        Raises ValueError for an unknown status, StoreError on a MySQL failure.
        """
        if new_status not in policy.STATUSES:
            raise ValueError(f"unknown schedule status {new_status!r}")
        is_paused = new_status == policy.PAUSED
        changes: dict[str, Any] = {
            "status": new_status,
            "pause_reason": (pause_reason or policy.PAUSED_BY_USER) if is_paused else None,
            "version": expected_version + 1,
            "updated_at": self._clock(),
        }
        if next_time is not None:
            changes["next_schedule_time"] = next_time
        if reset_failures:
            changes["failed_count"] = 0
        with self._cursor("changing a schedule's status", write=True) as cur:
            if not update_schedule(
                cur, self._loc, avatar_id, changes, (expected_status, expected_version)
            ):
                return None
            return select_schedule(cur, self._loc, avatar_id)

    def record_many(self, attempts: Sequence[Attempt]) -> list[Recorded]:
        """Record dispatches in one transaction; one ``Recorded`` per attempt, in order.

        Each is decided from its locked row as ``recording.changes_for`` says.
        A slot already recorded as a success writes nothing (``duplicate``).
        Raises StoreError, also when an avatar has no schedule row (then
        nothing of the batch is written).
        """
        with self._cursor("recording dispatch outcomes", write=True) as cur:
            try:
                return record_attempts(cur, self._loc, self._clock(), attempts)
            except MissingRowError as exc:
                raise StoreError(
                    f"MySQL {where(self._dsn)}: avatar {exc.args[0]} has no schedule row"
                ) from None

    def record_success(
        self,
        avatar_id: int,
        *,
        expected_version: int,
        trigger: str,
        planned_at: datetime | None,
        started_at: datetime,
        finished_at: datetime,
        action_type: str,
        action_id: int | None,
        next_time: datetime,
        idempotency_key: str | None,
    ) -> Recorded:
        """Record one successful dispatch in one transaction.

        Always (the dispatch happened): ``schedule_count+1``, ``last_schedule_time
        = started_at``, ``last_action_type``, ``failed_count = 0``, ``last_error =
        NULL``, a history row. Only while the row is at ``expected_version``, active
        or paused (``applied``): ``next_schedule_time = next_time``. Nothing when the slot
        was already recorded as a success (``duplicate``). Raises StoreError,
        also when the avatar has no schedule row.
        """
        (recorded,) = self.record_many([Attempt(
            avatar_id, expected_version, trigger, planned_at, started_at, finished_at,
            idempotency_key, action_type=action_type, action_id=action_id, next_time=next_time,
        )])  # fmt: skip
        return recorded

    def record_failure(
        self,
        avatar_id: int,
        *,
        expected_version: int,
        trigger: str,
        planned_at: datetime | None,
        started_at: datetime,
        finished_at: datetime,
        error: str,
        retry_time: datetime,
        max_consecutive_failures: int,
        idempotency_key: str | None,
    ) -> Recorded:
        """Record one failed dispatch in one transaction.

        Always: ``failed_count+1``, ``last_failed_time = finished_at``,
        ``last_error`` (first 512 characters), a history row. Only while the row
        is active at ``expected_version``: pause it (reason ``failures``) when
        ``policy.after_failure`` says the limit is reached (``auto_paused``),
        else ``next_schedule_time = retry_time``. Nothing when the slot was
        already recorded as a success (``duplicate``). Raises StoreError, also
        when the avatar has no schedule row.
        """
        (recorded,) = self.record_many([Attempt(
            avatar_id, expected_version, trigger, planned_at, started_at, finished_at,
            idempotency_key, error=error, retry_time=retry_time,
            max_consecutive_failures=max_consecutive_failures,
        )])  # fmt: skip
        return recorded

    def record_skipped(
        self,
        avatar_id: int,
        *,
        trigger: str,
        planned_at: datetime | None,
        started_at: datetime,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Add a ``skipped`` history row (a pick-up found nothing to do); the schedule
        is untouched. Raises StoreError."""
        with self._cursor("recording a skipped dispatch", write=True) as cur:
            insert_history(cur, self._loc, [{
                "avatar_id": avatar_id, "trigger": trigger, "planned_time": planned_at,
                "started_time": started_at, "finished_time": started_at,
                "outcome": "skipped", "error": reason, "idempotency_key": idempotency_key,
            }])  # fmt: skip

    def count_history_before(self, older_than: datetime) -> int:
        """How many history rows started before ``older_than`` (on idx_started_time).

        Raises StoreError.
        """
        with self._cursor("counting dispatch history") as cur:
            cur.execute(
                "SELECT COUNT(*) FROM avatar_schedule_history WHERE started_time < %s",
                (to_db(older_than, self._loc),),
            )
            (count,) = cur.fetchone()
        return count

    def prune_history(
        self,
        older_than: datetime,
        batch: int = 5000,
        *,
        progress: Callable[[int], None] | None = None,
        max_batches: int | None = None,
    ) -> int:
        """Delete history rows started before ``older_than``; return how many.

        Deletes ``batch`` rows per short transaction, so it never holds many
        locks or a long undo log; ``progress`` gets each committed batch's
        count. Stops after ``max_batches`` transactions if given (the poller
        prunes a batch per tick, so claims never wait for a long prune).
        Raises StoreError.
        """
        cutoff = to_db(older_than, self._loc)
        total = 0
        while True:
            with self._cursor("pruning dispatch history", write=True) as cur:
                cur.execute(
                    "DELETE FROM avatar_schedule_history WHERE started_time < %s LIMIT %s",
                    (cutoff, batch),
                )
                deleted = cur.rowcount
            total += deleted
            if progress is not None and deleted:
                progress(deleted)
            if deleted < batch:
                return total
            if max_batches is not None:
                max_batches -= 1
                if max_batches <= 0:
                    return total
