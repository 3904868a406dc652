"""Scheduling policies in MySQL: the table, reads, the one-transaction bulk set and its re-draw."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta

import pytest
from prometheus_client import REGISTRY

from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.schedule_policy import (
    DEFAULT,
    SchedulePolicy,
    Window,
    parse_policy,
    policy_to_dict,
)
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow

from .fixtures_migrations import columns, indexes
from .fixtures_store import CLOCK_NOW, T0, make, pause

EVENINGS = parse_policy(
    {
        "time_zone": "Asia/Shanghai",
        "windows": [{"start": "18:00", "end": "23:00", "days": ["mon", "tue", "wed"]}],
        "min_interval_hours": 1,
        "day_rates": {"sat": 2},
        "quiet_dates": ["2026-12-25"],
    }
)
REDRAWN_TO = T0 + timedelta(hours=30)


def keep_all(row: ScheduleRow) -> datetime | None:
    return None


def redraw_active(row: ScheduleRow) -> datetime | None:
    return REDRAWN_TO if row.status == "active" else None


def stored(mariadb: MariaDBServer, database: str) -> dict[int, dict]:
    rows = mariadb.query(database, "SELECT avatar_id, policy FROM avatar_schedule_policies")
    return {avatar_id: json.loads(text) for avatar_id, text in rows}


def test_the_migration_creates_the_policy_table_keyed_by_avatar(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    table = columns(mariadb, database, "avatar_schedule_policies")
    assert {name: definition[1:3] for name, definition in table.items()} == {
        "avatar_id": ("bigint(20)", "NO"),
        "policy": ("text", "NO"),
        "updated_at": ("datetime", "NO"),
    }
    assert indexes(mariadb, database, "avatar_schedule_policies") == {"PRIMARY": ["avatar_id"]}


def test_an_avatar_that_set_no_policy_reads_as_the_default(store: MysqlStore) -> None:
    make(store, 1)
    assert store.get_policy(1) == DEFAULT
    assert store.get_policies([1, 2]) == {1: DEFAULT, 2: DEFAULT}
    assert store.get_policies([]) == {}


def test_a_policy_set_reads_back_equal_and_is_stored_as_its_json_form(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    make(store, 1)
    done = store.set_policy(1, EVENINGS, keep_all)

    assert done is not None and not done.redrawn
    assert store.get_policy(1) == EVENINGS
    assert stored(mariadb, database) == {1: policy_to_dict(EVENINGS)}
    (stamp,) = mariadb.query(database, "SELECT updated_at FROM avatar_schedule_policies")
    assert stamp == (CLOCK_NOW.replace(tzinfo=None),)


def test_setting_a_policy_for_an_avatar_without_a_schedule_writes_nothing(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    assert store.set_policy(5, EVENINGS, keep_all) is None
    assert stored(mariadb, database) == {}


def test_a_bulk_set_gives_every_scheduled_avatar_the_policy_and_skips_the_others(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    for avatar_id in range(1, 301):
        make(store, avatar_id)
    store.set_policy(7, SchedulePolicy(min_interval_hours=3), keep_all)  # one set before

    done = store.set_policies([*range(1, 301), 9001, 9002], EVENINGS, keep_all)

    assert sorted(done) == list(range(1, 301))
    assert stored(mariadb, database) == dict.fromkeys(range(1, 301), policy_to_dict(EVENINGS))
    policies = store.get_policies([1, 150, 300, 9001])
    assert policies == {1: EVENINGS, 150: EVENINGS, 300: EVENINGS, 9001: DEFAULT}


def test_setting_the_default_deletes_the_rows_it_would_hold(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    for avatar_id in (1, 2, 3):
        make(store, avatar_id)
    store.set_policies([1, 2, 3], EVENINGS, keep_all)

    store.set_policies([1, 3], DEFAULT, keep_all)

    assert set(stored(mariadb, database)) == {2}
    assert store.get_policies([1, 2, 3]) == {1: DEFAULT, 2: EVENINGS, 3: DEFAULT}


def test_the_redraw_moves_active_schedules_in_mysql_and_bumps_their_version(
    store: MysqlStore,
) -> None:
    active = make(store, 1)
    make(store, 2)
    paused = pause(store, 2)

    done = store.set_policies([1, 2], EVENINGS, redraw_active)

    assert done[1].redrawn and not done[2].redrawn
    assert done[1].row == store.get(1)  # returned as MySQL holds it
    assert done[1].row.next_schedule_time == REDRAWN_TO
    assert done[1].row.version == active.version + 1
    assert store.get(2) == paused  # a paused schedule keeps its time and version


def test_the_redraw_is_asked_with_each_row_as_locked(store: MysqlStore) -> None:
    make(store, 1, T0)
    make(store, 2, T0 + timedelta(hours=1))
    seen: dict[int, datetime] = {}

    def record(row: ScheduleRow) -> datetime | None:
        seen[row.avatar_id] = row.next_schedule_time
        return None

    store.set_policies([2, 1, 1], EVENINGS, record)

    assert seen == {1: T0, 2: T0 + timedelta(hours=1)}


def test_a_bulk_set_cut_by_an_error_writes_nothing_at_all(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    for avatar_id in (1, 2, 3):
        make(store, avatar_id)
    before = [store.get(avatar_id) for avatar_id in (1, 2, 3)]

    def fail_on_the_third(row: ScheduleRow) -> datetime | None:
        if row.avatar_id == 3:
            raise RuntimeError("cut")
        return REDRAWN_TO

    with pytest.raises(RuntimeError, match="cut"):
        store.set_policies([1, 2, 3], EVENINGS, fail_on_the_third)

    assert stored(mariadb, database) == {}
    assert [store.get(avatar_id) for avatar_id in (1, 2, 3)] == before


def test_a_stored_policy_that_does_not_parse_reads_as_the_default_and_is_counted(
    store: MysqlStore, mariadb: MariaDBServer, database: str
) -> None:
    make(store, 1)
    make(store, 2)
    store.set_policies([1, 2], EVENINGS, keep_all)
    mariadb.query(
        database,
        "UPDATE avatar_schedule_policies SET policy = %s WHERE avatar_id = 1",
        ('{"windows": "at night"}',),
    )
    before = REGISTRY.get_sample_value("scheduler_policy_unreadable_total") or 0

    assert store.get_policies([1, 2]) == {1: DEFAULT, 2: EVENINGS}
    assert REGISTRY.get_sample_value("scheduler_policy_unreadable_total") == before + 1


def test_a_policy_with_second_windows_round_trips(store: MysqlStore) -> None:
    make(store, 1)
    seconds = SchedulePolicy(windows=(Window(time(0, 0, 5), time(0, 0, 10)),))
    store.set_policy(1, seconds, keep_all)
    assert store.get_policy(1) == seconds
