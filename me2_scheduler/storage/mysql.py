"""The MySQL store: ``avatar_schedules`` (the source of truth), the dispatch history
and the avatars' scheduling policies.

``MysqlStore`` is one object over these tables, one pool per process:
``schedules`` holds the schedule reads and guarded transitions, ``history``
the dispatch records and the history they leave, ``policies`` the
scheduling policies and their bulk setting, ``store_base`` the pool,
zone and clock they share. Every driver error leaves as ``StoreError``;
times in and out are aware datetimes (see ``rows``).
"""

from __future__ import annotations

from me2_scheduler.storage.history import HistoryTable
from me2_scheduler.storage.policies import PolicySet, PolicyTable
from me2_scheduler.storage.rows import HistoryEntry, Recorded, ScheduleRow
from me2_scheduler.storage.schedules import ScheduleTable

__all__ = ["HistoryEntry", "MysqlStore", "PolicySet", "Recorded", "ScheduleRow"]


class MysqlStore(ScheduleTable, HistoryTable, PolicyTable):
    """Schedules, history and policies in MySQL. Thread-safe; one instance per process.

    ``clock`` stamps ``created_at``/``updated_at`` (injectable for tests).
    Constructing a store opens no connection.
    """
