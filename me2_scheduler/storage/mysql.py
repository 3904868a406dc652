"""The MySQL store: ``avatar_schedules`` (the source of truth) and the dispatch history.

``MysqlStore`` is one object over both tables, one pool per process:
``schedules`` holds the schedule reads and guarded transitions, ``history``
the dispatch records and the history they leave, ``store_base`` the pool,
zone and clock they share. Every driver error leaves as ``StoreError``;
times in and out are aware datetimes (see ``rows``).
"""

from __future__ import annotations

from me2_scheduler.storage.history import HistoryTable
from me2_scheduler.storage.rows import HistoryEntry, Recorded, ScheduleRow
from me2_scheduler.storage.schedules import ScheduleTable

__all__ = ["HistoryEntry", "MysqlStore", "Recorded", "ScheduleRow"]


class MysqlStore(ScheduleTable, HistoryTable):
    """Schedules and history in MySQL. Thread-safe; one instance per process.

    ``clock`` stamps ``created_at``/``updated_at`` (injectable for tests).
    Constructing a store opens no connection.
    """
