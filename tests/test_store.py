"""The MySQL store on a real MariaDB: creates, reads, guarded transitions, connections, errors."""

from __future__ import annotations

import gc
import os
import socket
from datetime import timedelta

import pytest

from me2_devkit.testing.servers import MariaDBServer, free_port
from me2_scheduler.config import MysqlConf, MysqlDsn
from me2_scheduler.errors import StoreError
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.storage.mysql_conn import MysqlPool

from .fixtures_store import CLOCK_NOW, T0, failure, make, pause
from .support import mysql_conf, run_together

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
    results = run_together(*[lambda: store.create(42, T0)] * 6)

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
        7,
        expected_status="paused",
        expected_version=row.version,
        new_status="active",
        next_time=new_next,
        reset_failures=True,
    )

    assert resumed is not None
    assert (resumed.status, resumed.pause_reason, resumed.failed_count) == ("active", None, 0)
    assert resumed.next_schedule_time == new_next
    assert resumed.version == row.version + 1


def test_disabling_clears_the_pause_reason(store: MysqlStore) -> None:
    make(store, 7)
    pause(store, 7)

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
        7,
        expected_status=expected_status,
        expected_version=expected_version,
        new_status="disabled",
        next_time=T0 + timedelta(hours=1),
        reset_failures=True,
    )

    assert moved is None
    assert store.get(7) == row


def test_a_transition_to_an_unknown_status_is_refused(store: MysqlStore) -> None:
    make(store, 7)

    with pytest.raises(ValueError, match="unknown schedule status"):
        store.transition(7, expected_status="active", expected_version=0, new_status="gone")


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
