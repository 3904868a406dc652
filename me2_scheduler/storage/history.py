"""The ``avatar_schedule_history`` table: recording dispatches, reading and pruning them.

A batch of dispatches is recorded in one transaction with its schedule rows
(see ``recording``); the history is read newest first and pruned by age in
short transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from me2_scheduler.errors import StoreError
from me2_scheduler.policy import Attempt
from me2_scheduler.storage.mysql_conn import where
from me2_scheduler.storage.recording import (
    MissingRowError,
    move_past_recorded,
    read_for_pickup,
    record_attempts,
)
from me2_scheduler.storage.rows import (
    HISTORY_SELECT,
    HistoryEntry,
    Recorded,
    ScheduleRow,
    history_from_db,
    to_db,
)
from me2_scheduler.storage.store_base import StoreBase


class HistoryTable(StoreBase):
    """Dispatch records and the history they leave. Every method raises StoreError."""

    def record_many(self, attempts: Sequence[Attempt]) -> list[Recorded]:
        """Record dispatches in one transaction; one ``Recorded`` per attempt, in order.

        Each is decided from its locked row by ``policy.after_dispatch``. A
        slot already recorded as a success writes no history (``duplicate``);
        its row only moves on past it (``policy.past_recorded_slot``).
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

    def read_for_pickup(
        self, slots: Sequence[tuple[int, str]]
    ) -> tuple[dict[int, ScheduleRow], set[str]]:
        """The rows of the picked-up ``(avatar_id, idempotency_key)`` slots by avatar_id, and
        the keys among them already recorded as a success; one query."""
        with self._cursor("reading schedules") as cur:
            return read_for_pickup(cur, self._loc, slots)

    def move_past_recorded(
        self, moves: Sequence[tuple[int, datetime, datetime]]
    ) -> dict[int, ScheduleRow]:
        """Move the rows still waiting for slots recorded as a success already on to their
        next times, in one transaction; see ``recording.move_past_recorded``."""
        if not moves:
            return {}
        with self._cursor("moving past recorded slots", write=True) as cur:
            return move_past_recorded(cur, self._loc, self._clock(), moves)

    def history(self, avatar_id: int, limit: int, before_id: int = 0) -> list[HistoryEntry]:
        """The avatar's dispatches, newest first; ``before_id`` > 0 pages past that entry id."""
        sql = f"SELECT {HISTORY_SELECT} FROM avatar_schedule_history WHERE avatar_id = %s"
        params: list[Any] = [avatar_id]
        if before_id > 0:
            sql += " AND id < %s"
            params.append(before_id)
        params.append(limit)
        with self._cursor("reading dispatch history") as cur:
            cur.execute(sql + " ORDER BY id DESC LIMIT %s", params)
            return [history_from_db(raw, self._loc) for raw in cur.fetchall()]

    def count_history_before(self, older_than: datetime) -> int:
        """How many history rows started before ``older_than`` (on idx_started_time)."""
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
