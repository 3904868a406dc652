"""The ``avatar_schedules`` table: the source of truth for every avatar's schedule.

State changes are guarded: ``transition`` updates only while the row still
has the status and version the caller read. Every statement is
parameterised; column names come from code, never from input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pymysql

from me2_scheduler.policy import known_status
from me2_scheduler.states import PauseReason, Status
from me2_scheduler.storage.mysql_conn import open_connection, translated
from me2_scheduler.storage.rows import (
    ScheduleRow,
    from_db,
    select_schedule,
    select_schedules,
    to_db,
    update_schedule,
)
from me2_scheduler.storage.store_base import StoreBase

_STREAM_WRITE_TIMEOUT_S = 600  # a slow consumer of stream_active must not be cut at 60 s
UNKNOWN_REASON = "unknown"  # a row paused before pause_reason existed (the Go original)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


class ScheduleTable(StoreBase):
    """Reads and guarded writes of ``avatar_schedules``. Every method raises StoreError."""

    # -- reads --------------------------------------------------------------

    def get(self, avatar_id: int) -> ScheduleRow | None:
        """The avatar's schedule, or None if it has none."""
        with self._cursor("reading a schedule") as cur:
            return select_schedule(cur, self._loc, avatar_id)

    def batch_get(self, avatar_ids: Sequence[int]) -> list[ScheduleRow]:
        """Schedules in the order of ``avatar_ids``, duplicates folded, unknown ids omitted.

        One query.
        """
        if not avatar_ids:
            return []
        with self._cursor("reading schedules") as cur:
            by_id = select_schedules(cur, self._loc, avatar_ids)
        return [by_id[avatar_id] for avatar_id in dict.fromkeys(avatar_ids) if avatar_id in by_id]

    def active_ids_after(self, after_id: int, limit: int) -> list[int]:
        """A keyset page: up to ``limit`` active avatar_ids above ``after_id``, ascending."""
        with self._cursor("listing active avatars") as cur:
            cur.execute(
                "SELECT avatar_id FROM avatar_schedules WHERE status = %s AND avatar_id > %s"
                " ORDER BY avatar_id LIMIT %s",
                (Status.ACTIVE, after_id, limit),
            )
            return [avatar_id for (avatar_id,) in cur.fetchall()]

    def active_among(self, avatar_ids: Sequence[int]) -> set[int]:
        """Those of ``avatar_ids`` that are active (one query, ids only)."""
        wanted = list(dict.fromkeys(avatar_ids))
        if not wanted:
            return set()
        with self._cursor("reading active schedules") as cur:
            cur.execute(
                "SELECT avatar_id FROM avatar_schedules"
                f" WHERE status = %s AND avatar_id IN ({_marks(wanted)})",
                [Status.ACTIVE, *wanted],
            )
            return {avatar_id for (avatar_id,) in cur.fetchall()}

    def active_due_times(self, avatar_ids: Sequence[int]) -> dict[int, datetime]:
        """``next_schedule_time`` of those of ``avatar_ids`` that are active (one query).

        For checking the Redis index against MySQL.
        """
        wanted = list(dict.fromkeys(avatar_ids))
        if not wanted:
            return {}
        with self._cursor("reading active schedules") as cur:
            cur.execute(
                "SELECT avatar_id, next_schedule_time FROM avatar_schedules"
                f" WHERE status = %s AND avatar_id IN ({_marks(wanted)})",
                [Status.ACTIVE, *wanted],
            )
            return {avatar_id: from_db(due, self._loc) for avatar_id, due in cur.fetchall()}

    def overdue(
        self, before: datetime, limit: int, after_id: int = 0
    ) -> list[tuple[int, datetime]]:
        """Active avatars due at or before ``before``: ``(avatar_id, next_schedule_time)``.

        The seed's scan (``next_schedule_time <= ? AND status = 'active'``, on
        ``idx_next_schedule_time``), paged by avatar_id after ``after_id``.
        """
        with self._cursor("listing overdue schedules") as cur:
            cur.execute(
                "SELECT avatar_id, next_schedule_time FROM avatar_schedules"
                " WHERE next_schedule_time <= %s AND status = %s AND avatar_id > %s"
                " ORDER BY avatar_id LIMIT %s",
                (to_db(before, self._loc), Status.ACTIVE, after_id, limit),
            )
            return [(avatar_id, from_db(due, self._loc)) for avatar_id, due in cur.fetchall()]

    def stream_active(self, batch_size: int = 10_000) -> Iterator[tuple[int, datetime]]:
        """Every active ``(avatar_id, next_schedule_time)``, ascending avatar_id, streamed.

        Runs one unbuffered query on a dedicated connection (not the pool), so
        a million rows are never held in memory; the connection closes when
        the iterator is exhausted or discarded.
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
                    (Status.ACTIVE,),
                )
                while batch := cur.fetchmany(batch_size):
                    for avatar_id, due in batch:
                        yield avatar_id, from_db(due, self._loc)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def counts_by_status(self) -> dict[str, int]:
        """How many schedules are in each status (every status present, 0 if none)."""
        counts = {status.value: 0 for status in Status}
        with self._cursor("counting schedules") as cur:
            cur.execute("SELECT status, COUNT(*) FROM avatar_schedules GROUP BY status")
            for status, count in cur.fetchall():
                if status is not None:
                    counts[status] = count
        return counts

    def auto_paused_count(self) -> int:
        """How many schedules were paused by consecutive failures."""
        with self._cursor("counting auto-paused schedules") as cur:
            cur.execute(
                "SELECT COUNT(*) FROM avatar_schedules WHERE status = %s AND pause_reason = %s",
                (Status.PAUSED, PauseReason.FAILURES),
            )
            (count,) = cur.fetchone()
        return count

    def paused_by_reason(self) -> dict[str, int]:
        """Paused schedules by ``pause_reason``: ``user``, ``failures`` and ``unknown``.

        ``unknown`` counts rows paused before the column existed (the Go
        original). Reads only the paused rows (on idx_status_avatar_id).
        """
        counts = {reason.value: 0 for reason in PauseReason} | {UNKNOWN_REASON: 0}
        with self._cursor("counting paused schedules") as cur:
            cur.execute(
                "SELECT pause_reason, COUNT(*) FROM avatar_schedules WHERE status = %s"
                " GROUP BY pause_reason",
                (Status.PAUSED,),
            )
            for reason, count in cur.fetchall():
                counts[reason or UNKNOWN_REASON] += count
        return counts

    # -- writes -------------------------------------------------------------

    def create(self, avatar_id: int, next_time: datetime) -> ScheduleRow | None:
        """Create an active schedule due at ``next_time``; return it.

        Returns None, changing nothing, when the avatar already has a schedule
        (a concurrent create won): read it with ``get``.
        """
        now = to_db(self._clock(), self._loc)
        with self._cursor("creating a schedule", write=True) as cur:
            cur.execute(
                "INSERT IGNORE INTO avatar_schedules (avatar_id, status, next_schedule_time,"
                " schedule_count, failed_count, version, created_at, updated_at)"
                " VALUES (%s, %s, %s, 0, 0, 0, %s, %s)",
                (avatar_id, Status.ACTIVE, to_db(next_time, self._loc), now, now),
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
        status = known_status(new_status)
        changes: dict[str, Any] = {
            "status": status,
            "pause_reason": (pause_reason or PauseReason.USER) if status == Status.PAUSED else None,
            "version": expected_version + 1,
            "updated_at": self._clock(),
        }
        if next_time is not None:
            changes["next_schedule_time"] = next_time
        if reset_failures:
            changes["failed_count"] = 0
        with self._cursor("changing a schedule's status", write=True) as cur:
            guard = (expected_status, expected_version)
            if not update_schedule(cur, self._loc, avatar_id, changes, guard):
                return None
            return select_schedule(cur, self._loc, avatar_id)
