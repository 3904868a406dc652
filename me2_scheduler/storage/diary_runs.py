"""The ``diary_runs`` table: one row per diary date, the claim and checkpoint of its run.

A run is claimed by inserting its date's row (the primary key makes a second
insert a no-op), so at most one process runs a date. The owner (``host:pid``)
heartbeats while it runs; a ``running`` row whose heartbeat is older than
``DiarySchedule.StaleRunSeconds`` (or NULL: its owner released it at
shutdown), and a ``failed`` row, may be taken over by one guarded UPDATE on
the owner and heartbeat it was read with, and resumed from its checkpoint.

Every write by the owner is guarded by ``owner`` and ``status='running'``,
so a process that lost its run (it stalled and was taken over) can no longer
change it. Times are aware datetimes; DATETIME columns hold the DSN ``loc``
wall clock (see ``rows``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, tzinfo
from typing import Any

from me2_scheduler.config import MysqlConf
from me2_scheduler.storage.mysql_conn import MysqlPool, where, zone
from me2_scheduler.storage.rows import Cursor, from_db, to_db

RUNNING, DONE, FAILED = "running", "done", "failed"
STATUSES = (RUNNING, DONE, FAILED)
OWNER_MAX_CHARS = 128


@dataclass(frozen=True)
class Checkpoint:
    """Progress of a run: every active avatar up to ``avatar_id`` is done, with these counts."""

    avatar_id: int = 0
    success: int = 0
    failure: int = 0

    def __str__(self) -> str:
        return f"avatar {self.avatar_id} (success {self.success}, failure {self.failure})"


@dataclass(frozen=True)
class DiaryRun:
    """One ``diary_runs`` row."""

    run_date: date
    status: str
    checkpoint_avatar_id: int
    success_count: int
    failure_count: int
    total: int | None
    owner: str | None
    fire_time: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @property
    def checkpoint(self) -> Checkpoint:
        """Where a resumed run starts."""
        return Checkpoint(self.checkpoint_avatar_id, self.success_count, self.failure_count)

    def summary(self) -> str:
        """One phrase for logs and the CLI: ``done (success 950, failure 50)``."""
        counts = f"success {self.success_count}, failure {self.failure_count}"
        if self.status == RUNNING:
            where = f"{self.owner or 'nobody'} at avatar {self.checkpoint_avatar_id} ({counts})"
            released = self.heartbeat_at is None
            return f"running, released by {where}" if released else f"running on {where}"
        return f"{self.status} ({counts})"

    def is_stale(self, stale_before: datetime) -> bool:
        """True for a running row nobody heartbeats any more (or that its owner released)."""
        if self.status != RUNNING:
            return False
        return self.heartbeat_at is None or self.heartbeat_at < stale_before


@dataclass(frozen=True)
class Claim:
    """A run this process now owns: the row as claimed, and whether it continues an earlier one."""

    run: DiaryRun
    resumed: bool


_COLUMNS = tuple(f.name for f in fields(DiaryRun))
_SELECT = ", ".join(_COLUMNS)
_DATETIMES = frozenset({"fire_time", "started_at", "heartbeat_at", "finished_at"})


def _run_from_db(raw: tuple[Any, ...], loc: tzinfo) -> DiaryRun:
    values = dict(zip(_COLUMNS, raw, strict=True))
    for name in _DATETIMES:
        values[name] = from_db(values[name], loc)
    return DiaryRun(**values)


class DiaryRunStore:
    """Claims, checkpoints and reads diary runs. Thread-safe; opens no connection until used."""

    def __init__(self, conf: MysqlConf) -> None:
        self._dsn = conf.dsn
        self._loc = zone(conf.dsn.loc)
        self._pool = MysqlPool(conf)

    def __repr__(self) -> str:
        return f"DiaryRunStore({where(self._dsn)})"

    def close(self) -> None:
        """Close this process's pooled connections (reopened if used again)."""
        self._pool.close()

    # -- reads --------------------------------------------------------------

    def get(self, run_date: date) -> DiaryRun | None:
        """The run of ``run_date``, or None. Raises StoreError."""
        with self._pool.cursor("reading a diary run") as cur:
            return self._select(cur, run_date)

    def latest(self, limit: int = 10) -> list[DiaryRun]:
        """The ``limit`` most recent runs, newest date first. Raises StoreError."""
        with self._pool.cursor("listing diary runs") as cur:
            cur.execute(f"SELECT {_SELECT} FROM diary_runs ORDER BY run_date DESC LIMIT %s", limit)
            return [_run_from_db(raw, self._loc) for raw in cur.fetchall()]

    def resumable(self, stale_before: datetime, failed_since: datetime) -> DiaryRun | None:
        """The newest run to take over: stale ``running``, or ``failed`` fired since then.

        Raises StoreError.
        """
        with self._pool.cursor("looking for an abandoned diary run") as cur:
            cur.execute(
                f"SELECT {_SELECT} FROM diary_runs WHERE (status = %s AND"
                " (heartbeat_at IS NULL OR heartbeat_at < %s)) OR (status = %s AND fire_time >= %s)"
                " ORDER BY run_date DESC LIMIT 1",
                (RUNNING, to_db(stale_before, self._loc), FAILED, to_db(failed_since, self._loc)),
            )
            raw = cur.fetchone()
        return None if raw is None else _run_from_db(raw, self._loc)

    def _select(self, cur: Cursor, run_date: date) -> DiaryRun | None:
        cur.execute(f"SELECT {_SELECT} FROM diary_runs WHERE run_date = %s", (run_date,))
        raw = cur.fetchone()
        return None if raw is None else _run_from_db(raw, self._loc)

    # -- claiming -----------------------------------------------------------

    def claim(
        self, run_date: date, fire_time: datetime, owner: str, now: datetime, stale_before: datetime
    ) -> tuple[Claim | None, DiaryRun | None]:
        """Claim the run of ``run_date`` for ``owner``; return ``(claim, row)``.

        ``claim`` is None when the date is not ours to run: ``row`` then says
        why (done, or running with a heartbeat at or after ``stale_before``).
        A new date gets a fresh row; a stale ``running`` or a ``failed`` row is
        taken over from its checkpoint. Raises StoreError.
        """
        owner = owner[:OWNER_MAX_CHARS]
        stamp = to_db(now, self._loc)
        with self._pool.cursor("claiming a diary run", write=True) as cur:
            cur.execute(
                "INSERT IGNORE INTO diary_runs (run_date, status, checkpoint_avatar_id,"
                " success_count, failure_count, owner, fire_time, started_at, heartbeat_at)"
                " VALUES (%s, %s, 0, 0, 0, %s, %s, %s, %s)",
                (run_date, RUNNING, owner, to_db(fire_time, self._loc), stamp, stamp),
            )
            inserted = cur.rowcount == 1
            row = self._select(cur, run_date)
        if inserted and row is not None:
            return Claim(row, resumed=False), row
        if row is None or not (row.status == FAILED or row.is_stale(stale_before)):
            return None, row
        return self._take_over(row, owner, now), row

    def _take_over(self, row: DiaryRun, owner: str, now: datetime) -> Claim | None:
        """Become the owner of ``row`` unless someone changed it since it was read."""
        stamp = to_db(now, self._loc)
        old_heartbeat = None if row.heartbeat_at is None else to_db(row.heartbeat_at, self._loc)
        with self._pool.cursor("taking over a diary run", write=True) as cur:
            cur.execute(
                "UPDATE diary_runs SET status = %s, owner = %s, heartbeat_at = %s,"
                " finished_at = NULL WHERE run_date = %s AND status = %s AND owner <=> %s"
                " AND heartbeat_at <=> %s",
                (RUNNING, owner, stamp, row.run_date, row.status, row.owner, old_heartbeat),
            )
            # Without CLIENT_FOUND_ROWS an UPDATE that changes nothing counts 0: read back.
            taken = self._select(cur, row.run_date)
        ours = taken is not None and taken.owner == owner and taken.status == RUNNING
        if not ours or taken.heartbeat_at != from_db(stamp, self._loc):
            return None
        return Claim(taken, resumed=True)

    # -- the owner's writes ----------------------------------------------------

    def save(self, run_date: date, owner: str, checkpoint: Checkpoint, now: datetime) -> bool:
        """Record progress and heartbeat; False when ``owner`` no longer owns the run.

        Raises StoreError.
        """
        return self._update(run_date, owner, "saving a diary checkpoint", {
            **self._progress(checkpoint), "heartbeat_at": now,
        })  # fmt: skip

    def finish(self, run_date: date, owner: str, checkpoint: Checkpoint, now: datetime) -> bool:
        """Mark the run done with its final counts; False if not owned. Raises StoreError."""
        return self._update(run_date, owner, "finishing a diary run", {
            **self._progress(checkpoint), "status": DONE, "heartbeat_at": now,
            "finished_at": now, "total": checkpoint.success + checkpoint.failure,
        })  # fmt: skip

    def fail(self, run_date: date, owner: str, checkpoint: Checkpoint, now: datetime) -> bool:
        """Mark the run failed (it may be resumed); False if not owned. Raises StoreError."""
        return self._update(run_date, owner, "marking a diary run failed", {
            **self._progress(checkpoint), "status": FAILED, "heartbeat_at": now,
            "finished_at": now,
        })  # fmt: skip

    def release(self, run_date: date, owner: str, checkpoint: Checkpoint) -> bool:
        """Save progress and clear the heartbeat, so a restart resumes the run at once.

        Used at shutdown. False if not owned. Raises StoreError.
        """
        return self._update(run_date, owner, "releasing a diary run", {
            **self._progress(checkpoint), "heartbeat_at": None,
        })  # fmt: skip

    @staticmethod
    def _progress(checkpoint: Checkpoint) -> dict[str, Any]:
        return {
            "checkpoint_avatar_id": checkpoint.avatar_id,
            "success_count": checkpoint.success,
            "failure_count": checkpoint.failure,
        }

    def _update(self, run_date: date, owner: str, action: str, changes: dict[str, Any]) -> bool:
        """UPDATE the run while ``owner`` holds it running (column names from code only)."""
        owner = owner[:OWNER_MAX_CHARS]
        assignments = ", ".join(f"`{name}` = %s" for name in changes)
        values = [to_db(v, self._loc) if isinstance(v, datetime) else v for v in changes.values()]
        guard = " WHERE run_date = %s AND owner = %s AND status = %s"
        with self._pool.cursor(action, write=True) as cur:
            cur.execute(
                f"UPDATE diary_runs SET {assignments}{guard}", [*values, run_date, owner, RUNNING]
            )
            if cur.rowcount == 1:
                return True
            # 0 rows: either not ours any more, or the row already held these values.
            cur.execute(f"SELECT 1 FROM diary_runs{guard}", (run_date, owner, RUNNING))
            return cur.fetchone() is not None
