"""The store's scans of many rows, and its time zones, on a real MariaDB."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.storage.rows import from_db, to_db

from .fixtures_store import UTC, open_store
from .support import insert_schedules

# -- scans -----------------------------------------------------------------------


def test_stream_active_yields_exactly_the_active_rows_in_avatar_id_order(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    rng = random.Random(5)
    ids = rng.sample(range(1, 10_000_000), 20_000)  # inserted in random order
    statuses = rng.choices(["active", "paused", "disabled"], weights=[6, 2, 2], k=len(ids))
    dues = [datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(86400 * 30)) for _ in ids]
    insert_schedules(mariadb, database, list(zip(ids, statuses, dues, strict=True)))
    expected = sorted(
        (avatar_id, due.replace(tzinfo=UTC))
        for avatar_id, status, due in zip(ids, statuses, dues, strict=True)
        if status == "active"
    )

    streamed = list(store.stream_active(batch_size=1000))

    assert streamed == expected
    assert 10_000 < len(streamed) < 14_000


def test_active_ids_after_pages_through_active_avatars_ascending(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    rows = [(i, "active" if i % 3 else "paused", datetime(2026, 1, 1)) for i in range(1, 21)]
    insert_schedules(mariadb, database, rows)

    pages, after = [], 0
    while page := store.active_ids_after(after, limit=5):
        pages.append(page)
        after = page[-1]

    assert [avatar_id for page in pages for avatar_id in page] == [i for i in range(1, 21) if i % 3]
    assert [len(page) for page in pages] == [5, 5, 4]


def test_overdue_lists_active_rows_due_at_or_before_the_cutoff_paged_by_avatar_id(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    cutoff = datetime(2026, 1, 1, 12, 0, 0)
    rows = [
        (5, "active", cutoff),  # exactly at the cutoff: overdue
        (3, "active", cutoff - timedelta(hours=1)),
        (9, "active", cutoff - timedelta(days=1)),
        (4, "active", cutoff + timedelta(seconds=1)),  # not yet due
        (1, "paused", cutoff - timedelta(hours=1)),
        (2, "disabled", cutoff - timedelta(hours=1)),
    ]
    insert_schedules(mariadb, database, rows)
    before = cutoff.replace(tzinfo=UTC)

    first = store.overdue(before, limit=2)
    second = store.overdue(before, limit=2, after_id=first[-1][0])

    assert first == [(3, before - timedelta(hours=1)), (5, before)]
    assert second == [(9, before - timedelta(days=1))]
    assert store.overdue(before, limit=2, after_id=9) == []


def test_counts_by_status_reports_every_status(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    insert_schedules(mariadb, database, [(i, "active", datetime(2026, 1, 1)) for i in range(1, 4)])
    insert_schedules(mariadb, database, [(9, "paused", datetime(2026, 1, 1))])

    assert store.counts_by_status() == {"active": 3, "paused": 1, "disabled": 0}
    assert store.auto_paused_count() == 0


# -- time zones --------------------------------------------------------------------


def test_a_shanghai_loc_stores_the_shanghai_wall_clock_and_reads_back_the_same_instant(
    mariadb: MariaDBServer, database: str
) -> None:
    moment = datetime(2026, 3, 1, 4, 30, 15, 999_000, tzinfo=UTC)

    with open_store(mariadb, database, loc="Asia/Shanghai") as store:
        created = store.create(7, moment)
        server_now = store.server_time()

    raw = mariadb.query(database, "SELECT next_schedule_time, created_at FROM avatar_schedules")
    assert raw == [(datetime(2026, 3, 1, 12, 30, 15), datetime(2026, 3, 1, 19, 0, 0))]
    assert created is not None
    assert created.next_schedule_time == moment.replace(microsecond=0)
    assert created.next_schedule_time.utcoffset() == timedelta(hours=8)
    # The session zone follows loc, so the server's NOW() means the same instant.
    assert abs(server_now - datetime.now(UTC)) < timedelta(minutes=5)


def test_an_ambiguous_local_time_reads_back_as_its_first_occurrence() -> None:
    new_york = ZoneInfo("America/New_York")
    second_pass = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST, after the fall back

    stored = to_db(second_pass, new_york)

    assert stored == datetime(2026, 11, 1, 1, 30)
    # Compared as UTC: PEP 495 makes == across zones False for ambiguous times.
    read_back = from_db(stored, new_york)
    assert read_back.astimezone(UTC) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_the_store_refuses_naive_datetimes(store: MysqlStore) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        store.create(7, datetime(2026, 1, 1))
