"""Recording dispatch outcomes: a batch of dispatches in one MySQL transaction.

A worker dispatches a batch of claims, then records all their outcomes at
once (DESIGN §3.2 steps 4-5): the rows are locked together, the recent
history of every avatar is read in one statement, and the history rows are
inserted in one. What each dispatch writes is decided from the locked row
(``policy.after_dispatch``), exactly as for a lone dispatch, so a batch changes the number of round
trips, never an outcome: 6 statements per batch instead of 7 per dispatch.
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
    Cursor,
    Recorded,
    ScheduleRow,
    from_db,
    insert_history,
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


def recorded_successes(cur: Cursor, attempts: Sequence[Attempt]) -> set[str]:
    """The attempts' idempotency keys already recorded as a success.

    Call with the schedule rows locked, so the answer holds until commit.
    Only each avatar's latest rows are looked at (a backward scan of
    idx_avatar_id_id), all avatars in one statement that returns just the
    matches: usually none.
    """
    keyed = [a for a in attempts if a.idempotency_key]
    if not keyed:
        return set()
    avatars = sorted({a.avatar_id for a in keyed})
    recent = (
        "(SELECT idempotency_key, outcome FROM avatar_schedule_history"
        " WHERE avatar_id = %s ORDER BY id DESC LIMIT %s)"
    )
    keys = sorted({a.idempotency_key for a in keyed if a.idempotency_key})
    params: list[Any] = []
    for avatar_id in avatars:
        params += [avatar_id, RECENT_HISTORY]
    cur.execute(
        f"SELECT idempotency_key FROM ({' UNION ALL '.join([recent] * len(avatars))}) AS recent"
        f" WHERE outcome = %s AND idempotency_key IN ({', '.join(['%s'] * len(keys))})",
        [*params, Outcome.SUCCESS, *keys],
    )
    return {key for (key,) in cur.fetchall()}


def record_attempts(
    cur: Cursor, loc: tzinfo, now: datetime, attempts: Sequence[Attempt]
) -> list[Recorded]:
    """Record ``attempts`` on an open write transaction; one ``Recorded`` each, in order.

    An attempt whose slot is already recorded as a success (by a worker whose
    lease ran out while it lived) writes nothing (``duplicate``). Raises
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
            results.append(Recorded(False, row, duplicate=True))
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
