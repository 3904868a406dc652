"""The MySQL store on a real MariaDB: reads, guarded transitions, dispatch records, time zones."""

from __future__ import annotations

import gc
import os
import random
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pymysql
import pytest

from me2_devkit.testing.servers import MariaDBServer, free_port
from me2_scheduler.config import MysqlConf, MysqlDsn
from me2_scheduler.errors import StoreError
from me2_scheduler.policy import Failure, Success
from me2_scheduler.states import Trigger
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore, Recorded, ScheduleRow
from me2_scheduler.storage.mysql_conn import MysqlPool
from me2_scheduler.storage.rows import from_db, to_db

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CLOCK_NOW = datetime(2026, 3, 1, 11, 0, 0, tzinfo=UTC)


def mysql_conf(mariadb: MariaDBServer, database: str, **dsn: object) -> MysqlConf:
    fields = {"user": "root", "host": "127.0.0.1", "port": mariadb.port, "database": database}
    fields.update(dsn)
    return MysqlConf(data_source=mariadb.dsn(database), dsn=MysqlDsn(**fields, timeout_s=5))


def query(mariadb: MariaDBServer, database: str, sql: str, args: object = None) -> list[tuple]:
    """Read with a connection of our own (session time zone: the server's, UTC)."""
    return mariadb.query(database, sql, args)


def insert_rows(mariadb: MariaDBServer, database: str, rows: list[tuple]) -> None:
    """Bulk-insert (avatar_id, status, next_schedule_time as naive UTC) rows."""
    conn = pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", database=database)
    try:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO avatar_schedules (avatar_id, status, next_schedule_time)"
                " VALUES (%s, %s, %s)",
                rows,
            )
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def store(mariadb: MariaDBServer, database: str) -> Iterator[MysqlStore]:
    conf = mysql_conf(mariadb, database)
    apply_migrations(conf)
    store = MysqlStore(conf, clock=lambda: CLOCK_NOW)
    try:
        yield store
    finally:
        store.close()


def make(store: MysqlStore, avatar_id: int, next_time: datetime = T0) -> ScheduleRow:
    row = store.create(avatar_id, next_time)
    assert row is not None
    return row


def slot(row: ScheduleRow, started_at: datetime, finished_at: datetime) -> dict[str, Any]:
    """What every recorded dispatch of ``row``'s avatar holds: an auto slot planned at T0."""
    return {
        "avatar_id": row.avatar_id,
        "expected_version": row.version,
        "trigger": Trigger.AUTO,
        "planned_at": T0,
        "started_at": started_at,
        "finished_at": finished_at,
    }


def success(store: MysqlStore, row: ScheduleRow, next_time: datetime, **over: Any) -> Recorded:
    """Record one successful dispatch of ``row``'s avatar, as a worker would."""
    fields = slot(row, T0 + timedelta(seconds=2, milliseconds=500), T0 + timedelta(seconds=3))
    fields |= {"idempotency_key": f"{row.avatar_id}:1", "action_type": "post", "action_id": 99}
    (recorded,) = store.record_many([Success(**(fields | {"next_time": next_time} | over))])
    return recorded


def failure(store: MysqlStore, row: ScheduleRow, retry_time: datetime, **over: Any) -> Recorded:
    """Record one failed dispatch of ``row``'s avatar, as a worker would."""
    fields = slot(row, T0, T0 + timedelta(seconds=1))
    fields |= {"idempotency_key": None, "error": "action down", "max_consecutive_failures": 3}
    (recorded,) = store.record_many([Failure(**(fields | {"retry_time": retry_time} | over))])
    return recorded


# -- create / get / batch_get ------------------------------------------------


def test_create_makes_an_active_schedule_due_at_next_time(store: MysqlStore) -> None:
    row = make(store, 7, T0 + timedelta(microseconds=900_000))

    assert (row.avatar_id, row.status, row.next_schedule_time) == (7, "active", T0)
    assert (row.schedule_count, row.failed_count, row.version) == (0, 0, 0)
    assert row.created_at == row.updated_at == CLOCK_NOW
    assert row.pause_reason is None and row.last_schedule_time is None
    assert store.get(7) == row


def test_creating_an_existing_schedule_returns_none_and_changes_nothing(
    store: MysqlStore,
) -> None:
    first = make(store, 7)

    assert store.create(7, T0 + timedelta(hours=5)) is None
    assert store.get(7) == first


def test_concurrent_creates_of_one_avatar_insert_exactly_one_row(store: MysqlStore) -> None:
    results: list[ScheduleRow | None] = []
    start = threading.Barrier(6)

    def create() -> None:
        start.wait()
        results.append(store.create(42, T0))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 6
    assert [row.avatar_id for row in results if row is not None] == [42]


def test_get_of_an_unknown_avatar_is_none(store: MysqlStore) -> None:
    assert store.get(404) is None


def test_batch_get_keeps_request_order_folds_duplicates_and_omits_unknown(
    store: MysqlStore,
) -> None:
    for avatar_id in (1, 2, 3):
        make(store, avatar_id)

    rows = store.batch_get([3, 99, 1, 3, 2, 1])

    assert [row.avatar_id for row in rows] == [3, 1, 2]
    assert store.batch_get([]) == []


# -- transitions ---------------------------------------------------------------


def test_pausing_an_active_schedule_records_the_reason_and_bumps_the_version(
    store: MysqlStore,
) -> None:
    row = make(store, 7)

    paused = store.transition(7, expected_status="active", expected_version=0, new_status="paused")

    assert paused is not None
    assert (paused.status, paused.pause_reason, paused.version) == ("paused", "user", 1)
    assert paused.next_schedule_time == row.next_schedule_time
    assert store.get(7) == paused


def test_resuming_reschedules_resets_failures_and_clears_the_pause_reason(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    for _ in range(3):
        row = failure(store, row, T0).row
    assert (row.status, row.pause_reason, row.failed_count) == ("paused", "failures", 3)
    new_next = T0 + timedelta(hours=3)

    resumed = store.transition(
        7, expected_status="paused", expected_version=row.version, new_status="active",
        next_time=new_next, reset_failures=True,
    )  # fmt: skip

    assert resumed is not None
    assert (resumed.status, resumed.pause_reason, resumed.failed_count) == ("active", None, 0)
    assert resumed.next_schedule_time == new_next
    assert resumed.version == row.version + 1


def test_disabling_clears_the_pause_reason(store: MysqlStore) -> None:
    make(store, 7)
    paused = store.transition(7, expected_status="active", expected_version=0, new_status="paused")
    assert paused is not None

    disabled = store.transition(
        7, expected_status="paused", expected_version=1, new_status="disabled"
    )

    assert disabled is not None
    assert (disabled.status, disabled.pause_reason, disabled.version) == ("disabled", None, 2)


@pytest.mark.parametrize(
    ("expected_status", "expected_version"), [("paused", 0), ("active", 1), ("disabled", 5)]
)
def test_a_transition_whose_guard_fails_returns_none_and_changes_nothing(
    store: MysqlStore, expected_status: str, expected_version: int
) -> None:
    row = make(store, 7)

    moved = store.transition(
        7, expected_status=expected_status, expected_version=expected_version,
        new_status="disabled", next_time=T0 + timedelta(hours=1), reset_failures=True,
    )  # fmt: skip

    assert moved is None
    assert store.get(7) == row


def test_a_transition_to_an_unknown_status_is_refused(store: MysqlStore) -> None:
    make(store, 7)

    with pytest.raises(ValueError, match="unknown schedule status"):
        store.transition(7, expected_status="active", expected_version=0, new_status="gone")


# -- recording dispatches ---------------------------------------------------------


def test_a_success_counts_the_dispatch_reschedules_and_writes_history(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    next_time = T0 + timedelta(hours=4)

    recorded = success(store, row, next_time)

    assert recorded.applied and not recorded.auto_paused
    new = recorded.row
    assert (new.schedule_count, new.failed_count, new.version) == (1, 0, 1)
    assert new.last_schedule_time == T0 + timedelta(seconds=2)  # whole seconds
    assert (new.last_action_type, new.next_schedule_time) == ("post", next_time)
    assert store.get(7) == new
    (entry,) = store.history(7, limit=10)
    assert (entry.trigger, entry.outcome, entry.action_type, entry.action_id) == (
        "auto", "success", "post", 99,
    )  # fmt: skip
    assert (entry.planned_time, entry.lag_ms, entry.idempotency_key) == (T0, 2500, "7:1")
    assert entry.finished_time == T0 + timedelta(seconds=3)


def test_a_success_after_a_pause_meanwhile_counts_but_does_not_reschedule(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    store.transition(7, expected_status="active", expected_version=0, new_status="paused")

    recorded = success(store, row, T0 + timedelta(hours=4))

    assert not recorded.applied
    new = recorded.row
    assert (new.status, new.schedule_count, new.next_schedule_time) == ("paused", 1, T0)
    assert new.version == 2
    assert [entry.outcome for entry in store.history(7, limit=10)] == ["success"]


def test_a_failure_schedules_a_retry_and_keeps_the_error(store: MysqlStore) -> None:
    row = make(store, 7)
    retry = T0 + timedelta(minutes=5)

    recorded = failure(store, row, retry, error="x" * 600)

    assert recorded.applied and not recorded.auto_paused
    new = recorded.row
    assert (new.status, new.failed_count, new.next_schedule_time) == ("active", 1, retry)
    assert new.last_error == "x" * 512
    assert new.last_failed_time == T0 + timedelta(seconds=1)
    (entry,) = store.history(7, limit=10)
    assert (entry.outcome, entry.error, entry.lag_ms) == ("failure", "x" * 512, 0)


def test_the_nth_consecutive_failure_and_not_before_pauses_the_schedule(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    outcomes = []
    for attempt in range(1, 4):
        recorded = failure(store, row, T0 + timedelta(minutes=5 * attempt))
        row = recorded.row
        outcomes.append((recorded.auto_paused, row.status, row.failed_count, row.pause_reason))

    assert outcomes == [
        (False, "active", 1, None),
        (False, "active", 2, None),
        (True, "paused", 3, "failures"),
    ]
    assert row.next_schedule_time == T0 + timedelta(minutes=10)  # the pause keeps the slot
    assert store.auto_paused_count() == 1


def test_a_success_resets_the_consecutive_failures(store: MysqlStore) -> None:
    row = make(store, 7)
    for _ in range(2):
        row = failure(store, row, T0).row
    row = success(store, row, T0 + timedelta(hours=2)).row
    assert (row.failed_count, row.last_error) == (0, None)

    again = failure(store, row, T0 + timedelta(minutes=5))

    assert (again.row.failed_count, again.row.status, again.auto_paused) == (1, "active", False)


def test_a_failure_on_a_paused_schedule_counts_but_neither_retries_nor_auto_pauses(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    paused = store.transition(7, expected_status="active", expected_version=0, new_status="paused")
    assert paused is not None

    recorded = failure(store, paused, T0 + timedelta(minutes=5), max_consecutive_failures=1)

    assert not recorded.applied and not recorded.auto_paused
    new = recorded.row
    assert (new.status, new.pause_reason, new.failed_count) == ("paused", "user", 1)
    assert new.next_schedule_time == row.next_schedule_time


def test_recording_for_an_avatar_without_a_schedule_raises_store_error(
    store: MysqlStore,
) -> None:
    ghost = ScheduleRow(404, "active", T0, None, None, 0, 0, None, None, None, None, None, 0, 0)

    with pytest.raises(StoreError, match="avatar 404 has no schedule row"):
        success(store, ghost, T0)
    assert store.history(404, limit=10) == []


# -- history ---------------------------------------------------------------------


def test_history_pages_newest_first_by_entry_id(store: MysqlStore) -> None:
    rows = {avatar_id: make(store, avatar_id) for avatar_id in (7, 8)}
    for minute in range(7):
        started = T0 + timedelta(minutes=minute)
        manual = {"trigger": Trigger.MANUAL, "planned_at": None}
        failure(store, rows[7], T0, started_at=started, finished_at=started, **manual)
        failure(store, rows[8], T0, started_at=started, finished_at=started)

    first = store.history(7, limit=3)
    second = store.history(7, limit=3, before_id=first[-1].id)
    last = store.history(7, limit=3, before_id=second[-1].id)

    pages = [[entry.started_time.minute for entry in page] for page in (first, second, last)]
    assert pages == [[6, 5, 4], [3, 2, 1], [0]]
    assert {entry.avatar_id for entry in first + second + last} == {7}
    assert first[0].lag_ms is None and first[0].planned_time is None


def test_prune_history_deletes_old_entries_in_batches_and_keeps_the_rest(
    store: MysqlStore,
) -> None:
    row = make(store, 7)
    for day in range(14):
        started = T0 - timedelta(days=day)
        failure(store, row, T0, planned_at=started, started_at=started, finished_at=started)
    cutoff = T0 - timedelta(days=3, hours=12)

    deleted = store.prune_history(cutoff, batch=3)

    assert deleted == 10
    remaining = sorted(entry.started_time for entry in store.history(7, limit=100))
    assert remaining == [T0 - timedelta(days=day) for day in (3, 2, 1, 0)]
    assert store.prune_history(cutoff, batch=3) == 0


# -- scans -----------------------------------------------------------------------


def test_stream_active_yields_exactly_the_active_rows_in_avatar_id_order(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    rng = random.Random(5)
    ids = rng.sample(range(1, 10_000_000), 20_000)  # inserted in random order
    statuses = rng.choices(["active", "paused", "disabled"], weights=[6, 2, 2], k=len(ids))
    dues = [datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(86400 * 30)) for _ in ids]
    insert_rows(mariadb, database, list(zip(ids, statuses, dues, strict=True)))
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
    insert_rows(mariadb, database, rows)

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
    insert_rows(mariadb, database, rows)
    before = cutoff.replace(tzinfo=UTC)

    first = store.overdue(before, limit=2)
    second = store.overdue(before, limit=2, after_id=first[-1][0])

    assert first == [(3, before - timedelta(hours=1)), (5, before)]
    assert second == [(9, before - timedelta(days=1))]
    assert store.overdue(before, limit=2, after_id=9) == []


def test_counts_by_status_reports_every_status(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    insert_rows(mariadb, database, [(i, "active", datetime(2026, 1, 1)) for i in range(1, 4)])
    insert_rows(mariadb, database, [(9, "paused", datetime(2026, 1, 1))])

    assert store.counts_by_status() == {"active": 3, "paused": 1, "disabled": 0}
    assert store.auto_paused_count() == 0


# -- time zones --------------------------------------------------------------------


def test_a_shanghai_loc_stores_the_shanghai_wall_clock_and_reads_back_the_same_instant(
    mariadb: MariaDBServer, database: str
) -> None:
    conf = mysql_conf(mariadb, database, loc="Asia/Shanghai")
    apply_migrations(conf)
    store = MysqlStore(conf, clock=lambda: CLOCK_NOW)
    moment = datetime(2026, 3, 1, 4, 30, 15, 999_000, tzinfo=UTC)

    try:
        created = store.create(7, moment)
        server_now = store.server_time()
    finally:
        store.close()

    raw = query(mariadb, database, "SELECT next_schedule_time, created_at FROM avatar_schedules")
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


# -- connections and errors ----------------------------------------------------------


def test_constructing_a_store_connects_to_nothing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]

        MysqlStore(MysqlConf(dsn=MysqlDsn(port=port, database="me2")))

        with pytest.raises(BlockingIOError):  # no connection waits to be accepted
            listener.accept()


def test_an_unreachable_server_raises_store_error_without_the_password() -> None:
    port = free_port()
    conf = MysqlConf(dsn=MysqlDsn(password="Sup3r-Secret!", port=port, database="me2"))
    store = MysqlStore(conf)

    with pytest.raises(StoreError) as caught:
        store.ping()

    text = str(caught.value)
    assert f"127.0.0.1:{port}/me2" in text and "2003" in text
    assert "Sup3r-Secret!" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_wrong_password_raises_store_error_without_the_password(
    mariadb: MariaDBServer, database: str
) -> None:
    store = MysqlStore(mysql_conf(mariadb, database, password="Wr0ng-Secret!"))

    with pytest.raises(StoreError) as caught:
        store.get(1)

    assert "Access denied" in str(caught.value)
    assert "Wr0ng-Secret!" not in str(caught.value)


def test_a_forked_child_gets_its_own_connection_and_leaves_the_parents_alone(
    mariadb: MariaDBServer, database: str
) -> None:
    pool = MysqlPool(mysql_conf(mariadb, database))

    def connection_id() -> int:
        with pool.cursor("test") as cur:
            cur.execute("SELECT CONNECTION_ID()")
            return cur.fetchone()[0]

    parent_id = connection_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: use the pool, close it, collect garbage, leave
        code = 1
        try:
            os.write(write_end, str(connection_id()).encode())
            pool.close()
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    child_id = int(os.read(read_end, 64) or b"0")
    os.close(read_end)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert child_id not in (0, parent_id)
    assert connection_id() == parent_id  # still the same, live connection
    pool.close()
