"""What the MySQL store returns, and the one place rows and times are converted.

Also the few statements every store operation builds on (select, guarded
update, history insert), as functions over an open cursor.

The store's API takes and returns aware datetimes; DATETIME columns hold the
wall clock of the DSN's ``loc`` at whole-second resolution. ``to_db`` converts
to ``loc``, truncates the fraction and drops tzinfo; ``from_db`` attaches
``loc`` (``fold=0`` for an ambiguous or non-existent local time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, tzinfo
from typing import Any, overload

import pymysql

from me2_scheduler.clock import epoch
from me2_scheduler.states import Status, Trigger

Cursor = pymysql.cursors.Cursor
ERROR_MAX_CHARS = 512  # avatar_schedules.last_error / history.error are VARCHAR(512)
_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class ScheduleRow:
    """One ``avatar_schedules`` row; the seed's columns, then this rewrite's."""

    avatar_id: int
    status: str
    next_schedule_time: datetime
    last_schedule_time: datetime | None
    last_action_type: str | None
    schedule_count: int
    failed_count: int
    created_at: datetime | None
    updated_at: datetime | None
    last_failed_time: datetime | None
    last_error: str | None
    pause_reason: str | None
    version: int
    id: int

    @property
    def due_epoch(self) -> int | None:
        """Where this row puts its avatar in the index's ``due`` set: at its next time
        (whole epoch seconds) while active, nowhere (None) otherwise."""
        return epoch(self.next_schedule_time) if self.status == Status.ACTIVE else None


@dataclass(frozen=True)
class HistoryEntry:
    """One ``avatar_schedule_history`` row: one dispatch (or skipped pick-up) of an avatar."""

    id: int
    avatar_id: int
    trigger: str
    planned_time: datetime | None
    started_time: datetime
    finished_time: datetime | None
    outcome: str
    action_type: str | None
    action_id: int | None
    error: str | None
    lag_ms: int | None
    idempotency_key: str | None


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording a dispatch.

    ``applied`` is False when the schedule part was skipped because the row
    moved on (no longer active, or another writer bumped its version); the
    counters and the history row are written either way. ``auto_paused`` is
    True exactly when this failure paused the schedule. ``duplicate`` is True
    when the slot was already recorded as a success (by a worker whose lease
    ran out while it lived): then no history and no counter was written, and
    ``applied`` says whether the row, still waiting for that slot, moved on
    to a new next time (``policy.past_recorded_slot``).
    """

    applied: bool
    row: ScheduleRow
    auto_paused: bool = False
    duplicate: bool = False


SCHEDULE_COLUMNS = tuple(f.name for f in fields(ScheduleRow))
HISTORY_COLUMNS = tuple(f.name for f in fields(HistoryEntry))
SCHEDULE_SELECT = ", ".join(f"`{name}`" for name in SCHEDULE_COLUMNS)
HISTORY_SELECT = ", ".join(f"`{name}`" for name in HISTORY_COLUMNS)

_DATETIME_COLUMNS = frozenset(
    {
        "next_schedule_time",
        "last_schedule_time",
        "created_at",
        "updated_at",
        "last_failed_time",
        "planned_time",
        "started_time",
        "finished_time",
    }
)
# The seed declares these nullable with DEFAULT 0; NULL reads as 0.
_COUNT_COLUMNS = frozenset({"schedule_count", "failed_count", "version"})


def to_db(moment: datetime, loc: tzinfo) -> datetime:
    """``moment`` as the naive ``loc`` wall clock a DATETIME column stores, whole seconds.

    Raises ValueError for a naive datetime: the store only takes aware ones.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the store takes aware datetimes")
    return moment.astimezone(loc).replace(tzinfo=None, microsecond=0, fold=0)


@overload
def from_db(value: datetime, loc: tzinfo) -> datetime: ...
@overload
def from_db(value: None, loc: tzinfo) -> None: ...
def from_db(value: datetime | None, loc: tzinfo) -> datetime | None:
    """A DATETIME value read back as an aware datetime in ``loc`` (None stays None).

    An ambiguous local time (DST fall-back) is taken as its first occurrence.
    Compare results by instant (``timestamp()``/``astimezone``): PEP 495 makes
    ``==`` across zones False for ambiguous times.
    """
    return None if value is None else value.replace(tzinfo=loc, fold=0)


def _convert(names: tuple[str, ...], raw: tuple[Any, ...], loc: tzinfo) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in zip(names, raw, strict=True):
        if name in _DATETIME_COLUMNS:
            value = from_db(value, loc)
        elif name in _COUNT_COLUMNS:
            value = value or 0
        values[name] = value
    return values


def schedule_from_db(raw: tuple[Any, ...], loc: tzinfo) -> ScheduleRow:
    """A ``ScheduleRow`` from a tuple selected with ``SCHEDULE_SELECT``."""
    return ScheduleRow(**_convert(SCHEDULE_COLUMNS, raw, loc))


def history_from_db(raw: tuple[Any, ...], loc: tzinfo) -> HistoryEntry:
    """A ``HistoryEntry`` from a tuple selected with ``HISTORY_SELECT``."""
    return HistoryEntry(**_convert(HISTORY_COLUMNS, raw, loc))


def lag_ms(planned_at: datetime | None, started_at: datetime) -> int | None:
    """``started_at - planned_at`` in whole milliseconds, clamped to INT; None if unplanned."""
    if planned_at is None:
        return None
    lag = round((started_at - planned_at).total_seconds() * 1000)
    return max(-_INT_MAX - 1, min(_INT_MAX, lag))


def _params(values: Any, loc: tzinfo) -> list[Any]:
    return [to_db(value, loc) if isinstance(value, datetime) else value for value in values]


def select_schedule(
    cur: Cursor, loc: tzinfo, avatar_id: int, *, lock: bool = False
) -> ScheduleRow | None:
    """The avatar's row (``lock``: ``FOR UPDATE``), or None if it has none."""
    suffix = " FOR UPDATE" if lock else ""
    cur.execute(
        f"SELECT {SCHEDULE_SELECT} FROM avatar_schedules WHERE avatar_id = %s{suffix}",
        (avatar_id,),
    )
    raw = cur.fetchone()
    return None if raw is None else schedule_from_db(raw, loc)


def select_schedules(
    cur: Cursor, loc: tzinfo, avatar_ids: Iterable[int], *, lock: bool = False
) -> dict[int, ScheduleRow]:
    """The avatars' rows by avatar_id in one statement; ids with no row are absent.

    ``lock``: ``FOR UPDATE``, taken in index order, so two batches locking
    overlapping rows never deadlock on each other.
    """
    wanted = sorted(set(avatar_ids))
    if not wanted:
        return {}
    marks = ", ".join(["%s"] * len(wanted))
    suffix = " ORDER BY avatar_id FOR UPDATE" if lock else ""
    cur.execute(
        f"SELECT {SCHEDULE_SELECT} FROM avatar_schedules WHERE avatar_id IN ({marks}){suffix}",
        wanted,
    )
    rows = (schedule_from_db(raw, loc) for raw in cur.fetchall())
    return {row.avatar_id: row for row in rows}


def update_schedule(
    cur: Cursor,
    loc: tzinfo,
    avatar_id: int,
    changes: dict[str, Any],
    guard: tuple[str, int] | None = None,
) -> int:
    """UPDATE the avatar's row with ``changes`` (column names from code, never input).

    ``guard`` (status, version) limits it to a row still in that state.
    Returns the number of rows changed (0 or 1).
    """
    assignments = ", ".join(f"`{name}` = %s" for name in changes)
    sql = f"UPDATE avatar_schedules SET {assignments} WHERE avatar_id = %s"
    params = [*_params(changes.values(), loc), avatar_id]
    if guard is not None:
        sql += " AND status = %s AND version = %s"
        params.extend(guard)
    cur.execute(sql, params)
    return cur.rowcount


def update_schedules(cur: Cursor, loc: tzinfo, updates: dict[int, dict[str, Any]]) -> None:
    """UPDATE several avatars' rows, each with its own ``changes``, in one statement.

    Every changed column is set by ``CASE avatar_id``; a row that does not
    change a column keeps it (``ELSE``). Each CASE reads only ``avatar_id``
    and its own column, so MySQL's left-to-right SET order cannot matter.
    """
    if len(updates) == 1:
        ((avatar_id, changes),) = updates.items()
        update_schedule(cur, loc, avatar_id, changes)
        return
    columns = list(dict.fromkeys(name for changes in updates.values() for name in changes))
    assignments, params = [], []
    for name in columns:
        setting = [
            (avatar_id, changes[name]) for avatar_id, changes in updates.items() if name in changes
        ]
        whens = " ".join(["WHEN %s THEN %s"] * len(setting))
        assignments.append(f"`{name}` = CASE avatar_id {whens} ELSE `{name}` END")
        params += _params((value for pair in setting for value in pair), loc)
    marks = ", ".join(["%s"] * len(updates))
    cur.execute(
        f"UPDATE avatar_schedules SET {', '.join(assignments)} WHERE avatar_id IN ({marks})",
        [*params, *updates],
    )


HISTORY_INSERT = tuple(name for name in HISTORY_COLUMNS if name != "id")  # id: AUTO_INCREMENT


def known_trigger(trigger: str) -> Trigger:
    """``trigger`` as a ``Trigger``; raise ValueError for one other than auto/manual."""
    try:
        return Trigger(trigger)
    except ValueError:
        raise ValueError(f"unknown trigger {trigger!r}") from None


def insert_history(cur: Cursor, loc: tzinfo, entries: list[dict[str, Any]]) -> None:
    """INSERT history rows, one statement for all; each ``entry`` maps columns of
    ``HISTORY_INSERT`` to values (missing ones are NULL) and gets its ``lag_ms``.

    Raises ValueError for a trigger other than auto/manual.
    """
    if not entries:
        return
    values: list[Any] = []
    for entry in entries:
        entry = {
            **entry,
            "trigger": known_trigger(entry["trigger"]),
            "lag_ms": lag_ms(entry.get("planned_time"), entry["started_time"]),
        }
        if entry.get("error") is not None:
            entry["error"] = entry["error"][:ERROR_MAX_CHARS]
        values += _params((entry.get(name) for name in HISTORY_INSERT), loc)
    columns = ", ".join(f"`{name}`" for name in HISTORY_INSERT)
    row_marks = "(" + ", ".join(["%s"] * len(HISTORY_INSERT)) + ")"
    cur.execute(
        f"INSERT INTO avatar_schedule_history ({columns}) VALUES "
        + ", ".join([row_marks] * len(entries)),
        values,
    )
