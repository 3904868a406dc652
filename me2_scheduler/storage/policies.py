"""The ``avatar_schedule_policies`` table: each avatar's scheduling policy.

A row holds the policy's JSON form (``schedule_policy.policy_to_dict``); an
avatar without a row follows ``DEFAULT`` (the service's ``ActionSchedule``
and ``Timezone``, today's behaviour), so setting the default deletes the row.

Setting a policy, for one avatar or a thousand, is one transaction: the
schedule rows are locked (in avatar_id order, as recording locks them), the
policy rows written in one statement, and every schedule whose next time
falls outside the new windows re-drawn in one more (its version bumped, so
a dispatch in flight that read the old row records without moving it). The
caller then mirrors the re-drawn rows in Redis: MySQL first, as every
transition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from me2_scheduler import metrics
from me2_scheduler.errors import SchedulerError
from me2_scheduler.schedule_policy import DEFAULT, SchedulePolicy, parse_policy, policy_to_dict
from me2_scheduler.storage.recording import as_written
from me2_scheduler.storage.rows import (
    Cursor,
    ScheduleRow,
    select_schedules,
    to_db,
    update_schedules,
)
from me2_scheduler.storage.store_base import StoreBase

log = logging.getLogger("me2_scheduler.storage")

Redraw = Callable[[ScheduleRow], datetime | None]
"""The new next time of a locked schedule row under the new policy, or None to keep it."""


@dataclass(frozen=True)
class PolicySet:
    """One avatar whose policy was set: its schedule row after it, and whether the
    next time was re-drawn (it fell outside the new windows)."""

    row: ScheduleRow
    redrawn: bool


def policy_text(policy: SchedulePolicy) -> str:
    """The stored form of ``policy``: its JSON form, compact, keys sorted."""
    return json.dumps(policy_to_dict(policy), sort_keys=True, separators=(",", ":"))


def stored_policy(avatar_id: int, text: str) -> SchedulePolicy:
    """The policy a row holds; ``DEFAULT``, with an error logged and counted, for a
    row that does not parse (edited by hand): dispatch must go on whatever the row says."""
    try:
        return parse_policy(json.loads(text))
    except (ValueError, TypeError, AttributeError, SchedulerError) as exc:
        log.error(
            "avatar %d: stored scheduling policy unreadable (%s); using the default",
            avatar_id,
            " ".join(str(exc).split()),
            extra={"avatar_id": avatar_id},
        )
        metrics.POLICIES_UNREADABLE.inc()
        return DEFAULT


def _marks(count: int) -> str:
    return ", ".join(["%s"] * count)


def select_policies(cur: Cursor, avatar_ids: Sequence[int]) -> dict[int, SchedulePolicy]:
    """The policies of ``avatar_ids`` in one statement; an id without a row gets ``DEFAULT``."""
    wanted = sorted(set(avatar_ids))
    if not wanted:
        return {}
    cur.execute(
        "SELECT avatar_id, policy FROM avatar_schedule_policies"
        f" WHERE avatar_id IN ({_marks(len(wanted))})",
        wanted,
    )
    found = {avatar_id: stored_policy(avatar_id, text) for avatar_id, text in cur.fetchall()}
    return {avatar_id: found.get(avatar_id, DEFAULT) for avatar_id in wanted}


class PolicyTable(StoreBase):
    """Reads and writes of ``avatar_schedule_policies``. Every method raises StoreError."""

    def get_policy(self, avatar_id: int) -> SchedulePolicy:
        """The avatar's policy (``DEFAULT`` when it has none)."""
        return self.get_policies([avatar_id])[avatar_id]

    def get_policies(self, avatar_ids: Sequence[int]) -> dict[int, SchedulePolicy]:
        """The policies of ``avatar_ids`` (``DEFAULT`` for those without one), one query."""
        if not avatar_ids:
            return {}
        with self._cursor("reading scheduling policies") as cur:
            return select_policies(cur, avatar_ids)

    def set_policy(
        self, avatar_id: int, policy: SchedulePolicy, redraw: Redraw
    ) -> PolicySet | None:
        """Set the avatar's policy (see ``set_policies``); None when it has no schedule."""
        return self.set_policies([avatar_id], policy, redraw).get(avatar_id)

    def set_policies(
        self, avatar_ids: Sequence[int], policy: SchedulePolicy, redraw: Redraw
    ) -> dict[int, PolicySet]:
        """Give every avatar of ``avatar_ids`` that has a schedule ``policy``, in one transaction.

        ``redraw`` is asked, for each locked schedule row, for its new next
        time (None: keep it). Returns the avatars changed, by avatar_id; an
        id without a schedule is absent and nothing is written for it.
        """
        with self._cursor("setting scheduling policies", write=True) as cur:
            rows = select_schedules(cur, self._loc, avatar_ids, lock=True)
            if not rows:
                return {}
            now = self._clock()
            self._write_policies(cur, list(rows), policy, now)
            return self._redraw(cur, rows, redraw, now)

    def _write_policies(
        self, cur: Cursor, avatar_ids: list[int], policy: SchedulePolicy, now: datetime
    ) -> None:
        """Store ``policy`` for ``avatar_ids`` in one statement (the default: delete their rows)."""
        if policy == DEFAULT:
            marks = _marks(len(avatar_ids))
            cur.execute(
                f"DELETE FROM avatar_schedule_policies WHERE avatar_id IN ({marks})", avatar_ids
            )
            return
        text, stamp = policy_text(policy), to_db(now, self._loc)
        values: list[Any] = []
        for avatar_id in avatar_ids:
            values += [avatar_id, text, stamp]
        # One policy for every row, so the update takes plain parameters (no
        # VALUES(), deprecated on MySQL 8, nor a row alias, which MariaDB lacks).
        cur.execute(
            "INSERT INTO avatar_schedule_policies (avatar_id, policy, updated_at) VALUES "
            + ", ".join(["(%s, %s, %s)"] * len(avatar_ids))
            + " ON DUPLICATE KEY UPDATE policy = %s, updated_at = %s",
            [*values, text, stamp],
        )

    def _redraw(
        self, cur: Cursor, rows: dict[int, ScheduleRow], redraw: Redraw, now: datetime
    ) -> dict[int, PolicySet]:
        """Re-draw the next times ``redraw`` asks for in one statement; every row as written."""
        updates: dict[int, dict[str, Any]] = {}
        for avatar_id, row in rows.items():
            next_time = redraw(row)
            if next_time is not None:
                # The rows are locked: the version read is the version written over.
                updates[avatar_id] = {
                    "next_schedule_time": next_time,
                    "version": row.version + 1,
                    "updated_at": now,
                }
        if updates:
            update_schedules(cur, self._loc, updates)
        return {
            avatar_id: PolicySet(
                as_written(row, updates[avatar_id], self._loc) if avatar_id in updates else row,
                avatar_id in updates,
            )
            for avatar_id, row in rows.items()
        }
