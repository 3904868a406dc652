"""Recording dispatch outcomes: a batch of dispatches in one MySQL transaction.

A worker dispatches a batch of claims, then records all their outcomes at
once (DESIGN §3.2 steps 4-5): the rows are locked together, the recent
history of every avatar is read in one statement, and the history rows are
inserted in one. What each dispatch writes is decided from the locked row
(``policy.after_dispatch``), exactly as for a lone dispatch, so a batch changes the number of round
trips, never an outcome: 6 statements per batch instead of 7 per dispatch.

A slot recorded as a success is never recorded again: the worker's pick-up
read (``read_for_pickup``) finds it before Action is called, and the row
moves on past it (``move_past_recorded``); a repeat that raced past the
pick-up is found again here, under the rows' locks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from me2_scheduler import policy
from me2_scheduler.policy import Attempt, Success
from me2_scheduler.states import Outcome
from me2_scheduler.storage.rows import (
    ERROR_MAX_CHARS,
    SCHEDULE_COLUMNS,
    Cursor,
    Recorded,
    ScheduleRow,
    from_db,
    insert_history,
    schedule_from_db,
    select_schedules,
    to_db,
    update_schedules,
)

RECENT_HISTORY = 10  # a slot's second record comes within a lease: among the last few rows


class MissingRowError(LookupError):
    """An attempt's avatar has no schedule row; ``args[0]`` is its avatar_id."""


def history_row(attempt: Attempt) -> dict[str, Any]:
    """The history row of ``attempt`` (column -> value)."""
    entry: dict[str, Any] = {
        "avatar_id": attempt.avatar_id,
        "trigger": attempt.trigger,
        "planned_time": attempt.planned_at,
        "started_time": attempt.started_at,
        "finished_time": attempt.finished_at,
        "idempotency_key": attempt.idempotency_key,
    }
    if isinstance(attempt, Success):
        entry.update(outcome=Outcome.SUCCESS, action_type=attempt.action_type)
        entry.update(action_id=attempt.action_id)
    else:
        entry.update(outcome=Outcome.FAILURE, error=attempt.error)
    return entry


def as_written(row: ScheduleRow, changes: dict[str, Any], loc: tzinfo) -> ScheduleRow:
    """The locked ``row`` after an UPDATE of ``changes``, as a SELECT would read it back.

    Datetimes go through the column's round trip (``loc``, whole seconds), so
    recording returns the stored row without a second SELECT.
    """
    stored = {
        name: from_db(to_db(value, loc), loc) if isinstance(value, datetime) else value
        for name, value in changes.items()
    }
    return dataclasses.replace(row, **stored)


def row_changes(
    row: ScheduleRow, attempt: Attempt, now: datetime
) -> tuple[dict[str, Any], policy.AfterDispatch]:
    """The columns recording ``attempt`` writes to the locked ``row``, as ``policy``
    decides them, fitted to the columns and stamped with a new version at ``now``."""
    decided = policy.after_dispatch(row, attempt)
    changes = dict(decided.changes)
    if changes.get("last_error") is not None:
        changes["last_error"] = changes["last_error"][:ERROR_MAX_CHARS]
    changes["version"] = row.version + 1
    changes["updated_at"] = now
    return changes, decided


def _recent_successes(avatar_ids: Sequence[int], keys: Sequence[str]) -> tuple[str, list[Any]]:
    """A derived table (avatar_id, idempotency_key) of the ``keys`` recorded as a success
    among each avatar's latest ``RECENT_HISTORY`` rows, and its parameters.

    Each avatar's latest rows are a backward scan of idx_avatar_id_id; the
    table holds just the matches: usually none.
    """
    recent = (
        "(SELECT avatar_id, idempotency_key, outcome FROM avatar_schedule_history"
        " WHERE avatar_id = %s ORDER BY id DESC LIMIT %s)"
    )
    params: list[Any] = []
    for avatar_id in avatar_ids:
        params += [avatar_id, RECENT_HISTORY]
    sql = (
        f"SELECT avatar_id, idempotency_key FROM ({' UNION ALL '.join([recent] * len(avatar_ids))})"
        f" AS recent WHERE outcome = %s AND idempotency_key IN ({', '.join(['%s'] * len(keys))})"
    )
    return sql, [*params, Outcome.SUCCESS, *keys]


def recorded_successes(cur: Cursor, attempts: Sequence[Attempt]) -> set[str]:
    """The attempts' idempotency keys already recorded as a success.

    Call with the schedule rows locked, so the answer holds until commit.
    One statement for all avatars (``_recent_successes``).
    """
    keys = sorted({a.idempotency_key for a in attempts if a.idempotency_key})
    if not keys:
        return set()
    avatars = sorted({a.avatar_id for a in attempts if a.idempotency_key})
    sql, params = _recent_successes(avatars, keys)
    cur.execute(sql, params)
    return {key for (_, key) in cur.fetchall()}


def read_for_pickup(
    cur: Cursor, loc: tzinfo, slots: Sequence[tuple[int, str]]
) -> tuple[dict[int, ScheduleRow], set[str]]:
    """The rows of the ``(avatar_id, idempotency_key)`` slots a worker picked up, and
    which of those keys are already recorded as a success: one statement.

    A slot recorded as a success must not reach Action again, whatever its
    row says; the history is joined to the batch read, so the check costs no
    round trip of its own.
    """
    avatars = sorted({avatar_id for avatar_id, _ in slots})
    if not avatars:
        return {}, set()
    done_sql, done_params = _recent_successes(avatars, sorted({key for _, key in slots}))
    columns = ", ".join(f"s.`{name}`" for name in SCHEDULE_COLUMNS)
    cur.execute(
        f"SELECT {columns}, done.idempotency_key FROM avatar_schedules AS s"
        f" LEFT JOIN ({done_sql}) AS done ON done.avatar_id = s.avatar_id"
        f" WHERE s.avatar_id IN ({', '.join(['%s'] * len(avatars))})",
        [*done_params, *avatars],
    )
    rows: dict[int, ScheduleRow] = {}
    done: set[str] = set()
    for *raw, key in cur.fetchall():
        row = schedule_from_db(tuple(raw), loc)
        rows[row.avatar_id] = row
        if key is not None:
            done.add(key)
    return rows, done


def _moved(
    rows: dict[int, ScheduleRow],
    updates: dict[int, dict[str, Any]],
    avatar_id: int,
    changes: dict[str, Any],
    stamp: tuple[datetime, tzinfo],
) -> ScheduleRow:
    """Fold ``changes`` (stamped with a new version at ``stamp``'s time) into the
    avatar's pending UPDATE and locked row; the row as it will be written."""
    now, loc = stamp
    row = rows[avatar_id]
    changes = {**changes, "version": row.version + 1, "updated_at": now}
    updates.setdefault(avatar_id, {}).update(changes)
    rows[avatar_id] = as_written(row, changes, loc)
    return rows[avatar_id]


def record_attempts(
    cur: Cursor, loc: tzinfo, now: datetime, attempts: Sequence[Attempt]
) -> list[Recorded]:
    """Record ``attempts`` on an open write transaction; one ``Recorded`` each, in order.

    An attempt whose slot is already recorded as a success (by a worker whose
    lease ran out while it lived) writes no history and no counter
    (``duplicate``); its row only moves on to the attempt's next time if it
    still waits for that slot (``policy.past_recorded_slot``). Raises
    MissingRowError when an avatar has no schedule row.
    """
    if not attempts:
        return []
    rows = select_schedules(cur, loc, (a.avatar_id for a in attempts), lock=True)
    done = recorded_successes(cur, attempts)
    results: list[Recorded] = []
    history: list[dict[str, Any]] = []
    updates: dict[int, dict[str, Any]] = {}  # avatar_id -> its row's final changes
    for attempt in attempts:
        row = rows.get(attempt.avatar_id)
        if row is None:
            raise MissingRowError(attempt.avatar_id)
        if attempt.idempotency_key and attempt.idempotency_key in done:
            results.append(_repeated(rows, updates, attempt, (now, loc)))
            continue
        changes, decided = row_changes(row, attempt, now)
        updates.setdefault(attempt.avatar_id, {}).update(changes)
        written = as_written(row, changes, loc)
        rows[attempt.avatar_id] = written
        results.append(Recorded(decided.applied, written, decided.auto_paused))
        history.append(history_row(attempt))
        if isinstance(attempt, Success) and attempt.idempotency_key:
            done.add(attempt.idempotency_key)
    if updates:
        update_schedules(cur, loc, updates)
    insert_history(cur, loc, history)
    return results


def _repeated(
    rows: dict[int, ScheduleRow],
    updates: dict[int, dict[str, Any]],
    attempt: Attempt,
    stamp: tuple[datetime, tzinfo],
) -> Recorded:
    """The ``Recorded`` of an attempt whose slot is recorded as a success already."""
    row = rows[attempt.avatar_id]
    changes = policy.past_recorded_slot(row, attempt.planned_at, policy.recorded_next_time(attempt))
    if not changes:
        return Recorded(False, row, duplicate=True)
    return Recorded(True, _moved(rows, updates, attempt.avatar_id, changes, stamp), duplicate=True)


def move_past_recorded(
    cur: Cursor, loc: tzinfo, now: datetime, moves: Sequence[tuple[int, datetime, datetime]]
) -> dict[int, ScheduleRow]:
    """Move rows on past slots recorded as a success already, on an open write transaction.

    ``moves`` are ``(avatar_id, planned_at, next_time)``: each row still
    waiting for that slot moves on to ``next_time`` (``policy.past_recorded_slot``,
    decided on the locked row); the others are left as they are. Returns the
    rows as they now stand, by avatar_id (an avatar without one is absent).
    """
    rows = select_schedules(cur, loc, (avatar_id for avatar_id, _, _ in moves), lock=True)
    updates: dict[int, dict[str, Any]] = {}
    for avatar_id, planned_at, next_time in moves:
        row = rows.get(avatar_id)
        changes = {} if row is None else policy.past_recorded_slot(row, planned_at, next_time)
        if changes:
            _moved(rows, updates, avatar_id, changes, (now, loc))
    if updates:
        update_schedules(cur, loc, updates)
    return rows
