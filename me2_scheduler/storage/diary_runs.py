"""The ``diary_runs`` table: one row per diary run, its claim and its checkpoint.

A run is identified by its ``RunKey``: the diary date and the fire time that
started it (primary key ``(run_date, fire_time)``). With the daily production
cron that is one run per date; a cron firing several times a day gets one run
per fire, as the seed did; a manual run (``diary run-now``) is keyed by the
moment it was asked for. A run is claimed by inserting its row (the primary
key makes a second insert a no-op), so at most one process runs a fire time.
The owner (``host:pid``) heartbeats while it runs; a ``running`` row whose
heartbeat is older than ``DiarySchedule.StaleRunSeconds`` (or NULL: its owner
released it at shutdown), and a ``failed`` row, may be taken over by one
guarded UPDATE on the owner and heartbeat it was read with, and resumed from
its checkpoint.

Every write by the owner is guarded by the key, ``owner`` and
``status='running'``, so a process that lost its run (it stalled and was taken
over) can no longer change it. Times are aware datetimes; DATETIME columns
hold the DSN ``loc`` wall clock at whole seconds (see ``rows``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import date, datetime, tzinfo
from typing import Any

from me2_scheduler.config import MysqlConf
from me2_scheduler.states import DiaryRunStatus
from me2_scheduler.storage.mysql_conn import MysqlPool, named_lock, where, zone
from me2_scheduler.storage.rows import Cursor, from_db, to_db

OWNER_MAX_CHARS = 128
DATE_LOCK_TIMEOUT_S = 30  # how long a manual claim waits for another one of its date


@dataclass(frozen=True)
class RunKey:
    """Which run: the diary date and the fire time that started it."""

    run_date: date
    fire_time: datetime

    def __str__(self) -> str:
        return f"{self.run_date} (fire time {self.fire_time.isoformat(' ', 'seconds')})"


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
    status: DiaryRunStatus
    checkpoint_avatar_id: int
    success_count: int
    failure_count: int
    total: int | None
    owner: str | None
    fire_time: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @property
    def key(self) -> RunKey:
        """The run's identity, as its owner's writes name it."""
        return RunKey(self.run_date, self.fire_time)

    @property
    def checkpoint(self) -> Checkpoint:
        """Where a resumed run starts."""
        return Checkpoint(self.checkpoint_avatar_id, self.success_count, self.failure_count)

    def summary(self) -> str:
        """One phrase for logs and the CLI: ``done (success 950, failure 50)``."""
        counts = f"success {self.success_count}, failure {self.failure_count}"
        if self.status == DiaryRunStatus.RUNNING:
            where = f"{self.owner or 'nobody'} at avatar {self.checkpoint_avatar_id} ({counts})"
            released = self.heartbeat_at is None
            return f"running, released by {where}" if released else f"running on {where}"
        return f"{self.status} ({counts})"

    def is_stale(self, stale_before: datetime) -> bool:
        """True for a running row nobody heartbeats any more (or that its owner released)."""
        if self.status != DiaryRunStatus.RUNNING:
            return False
        return self.heartbeat_at is None or self.heartbeat_at < stale_before

    def can_take_over(self, stale_before: datetime) -> bool:
        """True when another process may resume this run: it failed, or it is stale."""
        return self.status == DiaryRunStatus.FAILED or self.is_stale(stale_before)


@dataclass(frozen=True)
class RunClaim:
    """A run this process now owns: the row as claimed, and whether it continues an earlier one."""

    run: DiaryRun
    resumed: bool


_COLUMNS = tuple(f.name for f in fields(DiaryRun))
_SELECT = ", ".join(_COLUMNS)
_DATETIMES = frozenset({"fire_time", "started_at", "heartbeat_at", "finished_at"})
_KEY = "run_date = %s AND fire_time = %s"
_NEWEST_FIRST = "ORDER BY fire_time DESC, run_date DESC"


def _run_from_db(raw: tuple[Any, ...], loc: tzinfo) -> DiaryRun:
    values = dict(zip(_COLUMNS, raw, strict=True))
    for name in _DATETIMES:
        values[name] = from_db(values[name], loc)
    values["status"] = DiaryRunStatus(values["status"])  # the column is an ENUM of these
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

    def get(self, key: RunKey) -> DiaryRun | None:
        """The run of ``key``, or None. Raises StoreError."""
        with self._pool.cursor("reading a diary run") as cur:
            return self._select(cur, key)

    def of_date(self, run_date: date) -> list[DiaryRun]:
        """Every run of ``run_date``, newest fire time first. Raises StoreError."""
        with self._pool.cursor("reading the diary runs of a date") as cur:
            return self._select_date(cur, run_date)

    def latest(self, limit: int = 10) -> list[DiaryRun]:
        """The ``limit`` most recent runs, newest fire time first. Raises StoreError."""
        with self._pool.cursor("listing diary runs") as cur:
            cur.execute(f"SELECT {_SELECT} FROM diary_runs {_NEWEST_FIRST} LIMIT %s", (limit,))
            return [_run_from_db(raw, self._loc) for raw in cur.fetchall()]

    def resumable(self, stale_before: datetime, failed_since: datetime) -> DiaryRun | None:
        """The newest run to take over: stale ``running``, or ``failed`` fired since then.

        Raises StoreError.
        """
        with self._pool.cursor("looking for an abandoned diary run") as cur:
            stale = (DiaryRunStatus.RUNNING, to_db(stale_before, self._loc))
            failed = (DiaryRunStatus.FAILED, to_db(failed_since, self._loc))
            cur.execute(
                f"SELECT {_SELECT} FROM diary_runs WHERE (status = %s AND"
                " (heartbeat_at IS NULL OR heartbeat_at < %s)) OR (status = %s AND fire_time >= %s)"
                f" {_NEWEST_FIRST} LIMIT 1",
                (*stale, *failed),
            )
            raw = cur.fetchone()
        return None if raw is None else _run_from_db(raw, self._loc)

    def _key_args(self, key: RunKey) -> tuple[date, datetime]:
        return key.run_date, to_db(key.fire_time, self._loc)

    def _select(self, cur: Cursor, key: RunKey) -> DiaryRun | None:
        cur.execute(f"SELECT {_SELECT} FROM diary_runs WHERE {_KEY}", self._key_args(key))
        raw = cur.fetchone()
        return None if raw is None else _run_from_db(raw, self._loc)

    def _select_date(self, cur: Cursor, run_date: date) -> list[DiaryRun]:
        cur.execute(
            f"SELECT {_SELECT} FROM diary_runs WHERE run_date = %s ORDER BY fire_time DESC",
            (run_date,),
        )
        return [_run_from_db(raw, self._loc) for raw in cur.fetchall()]

    # -- claiming -----------------------------------------------------------

    def claim(
        self, key: RunKey, owner: str, now: datetime, stale_before: datetime
    ) -> tuple[RunClaim | None, DiaryRun | None]:
        """Claim the run of ``key`` (a cron fire time) for ``owner``; return ``(claim, row)``.

        ``claim`` is None when the run is not ours: ``row`` then says why
        (done, or running with a heartbeat at or after ``stale_before``). A new
        key gets a fresh row; a stale ``running`` or a ``failed`` row is taken
        over from its checkpoint. Raises StoreError.
        """
        owner = owner[:OWNER_MAX_CHARS]
        with self._pool.cursor("claiming a diary run", write=True) as cur:
            inserted = self._insert(cur, key, owner, now)
            row = self._select(cur, key)
        if inserted and row is not None:
            return RunClaim(row, resumed=False), row
        if row is None or not row.can_take_over(stale_before):
            return None, row
        return self._take_over(row, owner, now), row

    def claim_manual(
        self, run_date: date, owner: str, now: datetime, stale_before: datetime
    ) -> tuple[RunClaim | None, DiaryRun | None]:
        """Claim a manual run of ``run_date``, keyed by ``now``; return ``(claim, row)``.

        Manual runs keep one run per date: ``claim`` is None, with ``row`` the
        reason, when a run of the date is done or running with a heartbeat at
        or after ``stale_before``. Otherwise the newest stale or failed run of
        the date is taken over, or, when the date has none, a new run starts.
        Raises StoreError (also when another manual claim of the date holds
        its lock for ``DATE_LOCK_TIMEOUT_S``).
        """
        owner = owner[:OWNER_MAX_CHARS]
        rows, inserted = self._first_of_date(run_date, owner, now)
        if inserted and rows:
            return RunClaim(rows[0], resumed=False), rows[0]
        blocking = next((row for row in rows if not row.can_take_over(stale_before)), None)
        if blocking is not None or not rows:
            return None, blocking
        return self._take_over(rows[0], owner, now), rows[0]

    def _first_of_date(
        self, run_date: date, owner: str, now: datetime
    ) -> tuple[list[DiaryRun], bool]:
        """The date's runs, newest first; when it has none, a new one inserted (True).

        Under a per-date named lock, so two manual claims cannot both find the
        date empty and start two runs.
        """
        with (
            self._pool.cursor("claiming a manual diary run", write=True) as cur,
            self._date_lock(cur, run_date),
        ):
            rows = self._select_date(cur, run_date)
            if rows:
                return rows, False
            key = RunKey(run_date, now)
            inserted = self._insert(cur, key, owner, now)
            cur.execute("COMMIT")  # before the lock is released: the next holder must see it
            row = self._select(cur, key)
        return ([] if row is None else [row]), inserted

    def _date_lock(self, cur: Cursor, run_date: date) -> AbstractContextManager[None]:
        return named_lock(
            cur,
            f"me2_scheduler.diary.{self._dsn.database}.{run_date.isoformat()}",
            DATE_LOCK_TIMEOUT_S,
            f"MySQL {where(self._dsn)}: another manual diary run of {run_date} held"
            f" its lock for {DATE_LOCK_TIMEOUT_S}s",
        )

    def _insert(self, cur: Cursor, key: RunKey, owner: str, now: datetime) -> bool:
        """INSERT the row of a new run unless ``key`` exists; True if inserted."""
        stamp = to_db(now, self._loc)
        cur.execute(
            "INSERT IGNORE INTO diary_runs (run_date, fire_time, status, checkpoint_avatar_id,"
            " success_count, failure_count, owner, started_at, heartbeat_at)"
            " VALUES (%s, %s, %s, 0, 0, 0, %s, %s, %s)",
            (*self._key_args(key), DiaryRunStatus.RUNNING, owner, stamp, stamp),
        )
        return cur.rowcount == 1

    def _take_over(self, row: DiaryRun, owner: str, now: datetime) -> RunClaim | None:
        """Become the owner of ``row`` unless someone changed it since it was read."""
        stamp = to_db(now, self._loc)
        old_heartbeat = None if row.heartbeat_at is None else to_db(row.heartbeat_at, self._loc)
        new = (DiaryRunStatus.RUNNING, owner, stamp)
        as_read = (*self._key_args(row.key), row.status, row.owner, old_heartbeat)
        with self._pool.cursor("taking over a diary run", write=True) as cur:
            cur.execute(
                "UPDATE diary_runs SET status = %s, owner = %s, heartbeat_at = %s,"
                f" finished_at = NULL WHERE {_KEY} AND status = %s AND owner <=> %s"
                " AND heartbeat_at <=> %s",
                (*new, *as_read),
            )
            # Without CLIENT_FOUND_ROWS an UPDATE that changes nothing counts 0: read back.
            taken = self._select(cur, row.key)
        expected = (DiaryRunStatus.RUNNING, owner, from_db(stamp, self._loc))
        if taken is None or (taken.status, taken.owner, taken.heartbeat_at) != expected:
            return None
        return RunClaim(taken, resumed=True)

    # -- the owner's writes ----------------------------------------------------

    def save(self, key: RunKey, owner: str, checkpoint: Checkpoint, now: datetime) -> bool:
        """Record progress and heartbeat; False when ``owner`` no longer owns the run.

        Raises StoreError.
        """
        changes = {**_progress(checkpoint), "heartbeat_at": now}
        return self._update(key, owner, "saving a diary checkpoint", changes)

    def finish(self, key: RunKey, owner: str, checkpoint: Checkpoint, now: datetime) -> bool:
        """Mark the run done with its final counts; False if not owned. Raises StoreError."""
        changes = {
            **_ended(checkpoint, DiaryRunStatus.DONE, now),
            "total": checkpoint.success + checkpoint.failure,
        }
        return self._update(key, owner, "finishing a diary run", changes)

    def fail(self, key: RunKey, owner: str, checkpoint: Checkpoint, now: datetime) -> bool:
        """Mark the run failed (it may be resumed); False if not owned. Raises StoreError."""
        changes = _ended(checkpoint, DiaryRunStatus.FAILED, now)
        return self._update(key, owner, "marking a diary run failed", changes)

    def release(self, key: RunKey, owner: str, checkpoint: Checkpoint) -> bool:
        """Save progress and clear the heartbeat, so a restart resumes the run at once.

        Used at shutdown. False if not owned. Raises StoreError.
        """
        changes = {**_progress(checkpoint), "heartbeat_at": None}
        return self._update(key, owner, "releasing a diary run", changes)

    def _update(self, key: RunKey, owner: str, action: str, changes: dict[str, Any]) -> bool:
        """UPDATE the run while ``owner`` holds it running (column names from code only)."""
        owner = owner[:OWNER_MAX_CHARS]
        assignments = ", ".join(f"`{name}` = %s" for name in changes)
        values = [to_db(v, self._loc) if isinstance(v, datetime) else v for v in changes.values()]
        guard = f" WHERE {_KEY} AND owner = %s AND status = %s"
        guard_args = [*self._key_args(key), owner, DiaryRunStatus.RUNNING]
        with self._pool.cursor(action, write=True) as cur:
            cur.execute(f"UPDATE diary_runs SET {assignments}{guard}", [*values, *guard_args])
            if cur.rowcount == 1:
                return True
            # 0 rows: either not ours any more, or the row already held these values.
            cur.execute(f"SELECT 1 FROM diary_runs{guard}", guard_args)
            return cur.fetchone() is not None


def _progress(checkpoint: Checkpoint) -> dict[str, Any]:
    """The columns of a checkpoint."""
    return {
        "checkpoint_avatar_id": checkpoint.avatar_id,
        "success_count": checkpoint.success,
        "failure_count": checkpoint.failure,
    }


def _ended(checkpoint: Checkpoint, status: DiaryRunStatus, now: datetime) -> dict[str, Any]:
    """The columns of a run that ended at ``now`` with ``status``."""
    return {**_progress(checkpoint), "status": status, "heartbeat_at": now, "finished_at": now}
