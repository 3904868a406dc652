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

from me2_scheduler.config import MysqlConf
from me2_scheduler.storage.history import HistoryTable
from me2_scheduler.storage.mysql_conn import idle_session_s
from me2_scheduler.storage.policies import PolicySet, PolicyTable
from me2_scheduler.storage.rows import HistoryEntry, Recorded, ScheduleRow
from me2_scheduler.storage.schedules import ScheduleTable

__all__ = ["HistoryEntry", "MysqlStore", "PolicySet", "Recorded", "ScheduleRow", "leased_store"]


class MysqlStore(ScheduleTable, HistoryTable, PolicyTable):
    """Schedules, history and policies in MySQL. Thread-safe; one instance per process.

    ``clock`` stamps ``created_at``/``updated_at`` (injectable for tests).
    Constructing a store opens no connection.
    """


def leased_store(conf: MysqlConf, lease_s: float) -> MysqlStore:
    """The store of a role that works under leases of ``lease_s`` (worker, poller).

    Past its lease a claim is someone else's, so no use waits on a silent
    MySQL longer than a lease; and the server drops a session of this role
    idle for half a lease (``idle_session_s``), so a process frozen inside its
    record gives its row locks up before its claims can be taken over: the
    worker that takes them records at once, instead of waiting on those locks
    until its own use times out and its claims go round again.
    """
    return MysqlStore(conf, use_timeout_s=lease_s, idle_s=idle_session_s(lease_s))
