"""A dispatch record returns the row exactly as MySQL now holds it, in every DSN zone.

The record calls build the returned row from the change they wrote instead of
reading it back (one round trip fewer per dispatch); these prove the two agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.storage.mysql import MysqlStore

from .fixtures_store import failure, make, open_store, success, success_while_paused

UTC = timezone.utc
# Microseconds on purpose: the column keeps whole seconds, and so must the returned row.
STAMP = datetime(2026, 3, 8, 6, 59, 59, 700_000, tzinfo=UTC)  # 01:59:59 EST, DST begins at 02:00


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Shanghai"])
def zoned_store(request, mariadb: MariaDBServer, database: str) -> Iterator[MysqlStore]:
    with open_store(mariadb, database, STAMP, loc=request.param) as store:
        yield store


def test_a_recorded_success_returns_the_row_mysql_holds(zoned_store: MysqlStore) -> None:
    row = make(zoned_store, 11)
    recorded = success(
        zoned_store, row, STAMP + timedelta(hours=3, microseconds=250), started_at=STAMP
    )
    assert recorded.row == zoned_store.get(11)


def test_a_recorded_failure_and_an_auto_pause_return_the_row_mysql_holds(
    zoned_store: MysqlStore,
) -> None:
    row = make(zoned_store, 12)
    for attempt in range(3):  # the third consecutive failure pauses (limit 3)
        recorded = failure(zoned_store, row, STAMP + timedelta(minutes=5), finished_at=STAMP)
        assert recorded.row == zoned_store.get(12), attempt
        row = recorded.row
    assert recorded.auto_paused and recorded.row.status == "paused"


def test_a_success_after_a_pause_returns_the_paused_row_mysql_holds(
    zoned_store: MysqlStore,
) -> None:
    recorded = success_while_paused(zoned_store, 13, STAMP + timedelta(hours=3))
    assert not recorded.applied
    assert recorded.row == zoned_store.get(13)
