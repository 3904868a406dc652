"""Schema migrations on a real MariaDB: fresh databases, re-runs, the seed's table and rows,
runs cut after their DDL, concurrent runs and statement splitting."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, time, timedelta

import pymysql
import pytest

from me2_devkit.testing.servers import MariaDBServer, free_port
from me2_scheduler.config import Config, MysqlConf, MysqlDsn, RedisConf
from me2_scheduler.errors import SchemaBehindError, StoreError
from me2_scheduler.storage.migrations import (
    apply_migrations,
    available_migrations,
    check_schema,
    pending_migrations,
    run_migration,
    split_statements,
)
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.supervisor.preflight import preflight

from .fixtures_migrations import (
    ALL_VERSIONS,
    SEED_COLUMNS,
    SEED_DDL,
    SEED_DOCUMENT_DDL_SHA256,
    columns,
    cursor,
    indexes,
    run_by_hand,
    table_options,
)
from .support import mysql_conf, run_together, scratch_database


@pytest.fixture
def other_database(mariadb: MariaDBServer) -> Iterator[str]:
    """A second fresh database, for the seed's own table."""
    with scratch_database(mariadb, "seed_") as name:
        yield name


def test_the_shipped_migrations_are_the_listed_versions_in_order() -> None:
    assert [m.version for m in available_migrations()] == ALL_VERSIONS


def test_the_seed_migration_creates_the_seed_documents_table_verbatim() -> None:
    # The Go original's databases hold this table: 001 may not differ from it by a byte.
    assert hashlib.sha256(SEED_DDL.encode()).hexdigest() == SEED_DOCUMENT_DDL_SHA256
    assert SEED_DDL.startswith("CREATE TABLE IF NOT EXISTS avatar_schedules (")


def test_migrating_an_empty_database_creates_every_table_column_and_index(
    mariadb: MariaDBServer, database: str
) -> None:
    assert apply_migrations(mysql_conf(mariadb, database)) == ALL_VERSIONS

    schedule_columns = columns(mariadb, database, "avatar_schedules")
    added = ("last_failed_time", "last_error", "pause_reason", "version")
    assert list(schedule_columns) == [*SEED_COLUMNS, *added]
    assert schedule_columns["last_error"][1:4] == ("varchar(512)", "YES", "NULL")
    assert schedule_columns["pause_reason"][1] == "enum('user','failures')"
    assert schedule_columns["version"][1:4] == ("bigint(20)", "NO", "0")
    assert indexes(mariadb, database, "avatar_schedules") == {
        "PRIMARY": ["id"],
        "avatar_id": ["avatar_id"],
        "idx_next_schedule_time": ["next_schedule_time", "status"],
        "idx_status_avatar_id": ["status", "avatar_id"],
        "idx_status_reason_avatar_id": ["status", "pause_reason", "avatar_id"],
    }
    history = columns(mariadb, database, "avatar_schedule_history")
    assert " ".join(history) == HISTORY_COLUMNS
    assert history["outcome"][1] == "enum('success','failure','skipped')"
    assert indexes(mariadb, database, "avatar_schedule_history") == {
        "PRIMARY": ["id"],
        "idx_avatar_id_id": ["avatar_id", "id"],
        "idx_started_time": ["started_time"],
    }
    diary = columns(mariadb, database, "diary_runs")
    assert tuple(diary) == DIARY_RUN_COLUMNS
    assert diary["run_date"][7] == "PRI"
    assert diary["fire_time"][1:3] == ("datetime", "NO")
    assert diary["checkpoint_avatar_id"][1:4] == ("bigint(20)", "NO", "0")
    assert indexes(mariadb, database, "diary_runs") == {
        "PRIMARY": ["run_date", "fire_time"],
        "idx_fire_time": ["fire_time"],
    }


def test_the_seed_columns_match_a_table_created_by_the_seed_ddl(
    mariadb: MariaDBServer, database: str, other_database: str
) -> None:
    apply_migrations(mysql_conf(mariadb, database))
    mariadb.query(other_database, SEED_DDL)

    migrated = columns(mariadb, database, "avatar_schedules")
    seed = columns(mariadb, other_database, "avatar_schedules")
    # COLUMN_KEY (last) aside: idx_status_avatar_id makes `status` a key column.
    assert {name: migrated[name][:-1] for name in SEED_COLUMNS} == {
        name: definition[:-1] for name, definition in seed.items()
    }
    seed_indexes = indexes(mariadb, other_database, "avatar_schedules")
    migrated_indexes = indexes(mariadb, database, "avatar_schedules")
    assert {name: migrated_indexes[name] for name in seed_indexes} == seed_indexes
    assert table_options(mariadb, database, "avatar_schedules") == table_options(
        mariadb, other_database, "avatar_schedules"
    )


def test_rerunning_migrations_applies_nothing(mariadb: MariaDBServer, database: str) -> None:
    conf = mysql_conf(mariadb, database)
    apply_migrations(conf)

    assert apply_migrations(conf) == []
    assert pending_migrations(conf) == []
    ledger = mariadb.query(database, "SELECT COUNT(*) FROM schema_migrations")
    assert ledger == [(len(ALL_VERSIONS),)]


def test_a_seed_table_holding_rows_upgrades_without_losing_any(
    mariadb: MariaDBServer, database: str
) -> None:
    mariadb.query(database, SEED_DDL)
    statuses = ("active", "paused", "disabled")
    rows = [
        (
            1000 + i * 7,
            statuses[i % 3],
            datetime(2026, 1, 1 + i % 28, i % 24, i % 60, 5),
            None if i % 4 else datetime(2025, 12, 31, 23, 59, i % 60),
            None if i % 5 else f"post-{i}",
            i,
            i % 6,
        )
        for i in range(1000)
    ]
    conn = pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", database=database)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO avatar_schedules (avatar_id, status, next_schedule_time,"
            " last_schedule_time, last_action_type, schedule_count, failed_count)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    conn.commit()
    conn.close()
    select_seed = f"SELECT {', '.join(SEED_COLUMNS)} FROM avatar_schedules ORDER BY id"
    before = mariadb.query(database, select_seed)

    assert apply_migrations(mysql_conf(mariadb, database)) == ALL_VERSIONS

    assert len(before) == 1000
    assert mariadb.query(database, select_seed) == before
    assert mariadb.query(
        database,
        "SELECT COUNT(*) FROM avatar_schedules WHERE version = 0 AND last_failed_time IS NULL"
        " AND last_error IS NULL AND pause_reason IS NULL",
    ) == [(1000,)]


HISTORY_COLUMNS = (
    "id avatar_id trigger planned_time started_time finished_time outcome"
    " action_type action_id error lag_ms idempotency_key"
)

DIARY_RUN_COLUMNS = (
    "run_date",
    "status",
    "checkpoint_avatar_id",
    "success_count",
    "failure_count",
    "total",
    "owner",
    "fire_time",
    "started_at",
    "heartbeat_at",
    "finished_at",
)


def diary_runs_before_004(day: int) -> tuple:
    """A row as 003 allowed it: fire_time set, or NULL with or without started_at."""
    run_date = date(2025, 1, 1) + timedelta(days=day)
    evening = datetime.combine(run_date, time(22, 0))
    fire_time = evening if day % 3 == 0 else None
    started_at = None if day % 3 == 2 else evening + timedelta(minutes=5, seconds=day)
    finished = started_at + timedelta(minutes=30) if started_at and day % 2 else None
    status = ("done", "failed")[day % 2] if finished else "running"
    # checkpoint_avatar_id, success_count, failure_count, total
    progress = (day * 10, day * 9, day, day * 10 if finished else None)
    owner, heartbeat_at = f"host-{day}:1", started_at
    return (run_date, status, *progress, owner, fire_time, started_at, heartbeat_at, finished)


def test_migration_004_keys_a_diary_runs_table_holding_rows_by_fire_time_losing_none(
    mariadb: MariaDBServer, database: str
) -> None:
    run_by_hand(mariadb, database, ALL_VERSIONS[:3])  # a database left at 003
    with cursor(mariadb, database) as cur:
        cur.executemany(
            f"INSERT INTO diary_runs ({', '.join(DIARY_RUN_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(DIARY_RUN_COLUMNS))})",
            [diary_runs_before_004(day) for day in range(30)],
        )
    select = f"SELECT {', '.join(DIARY_RUN_COLUMNS)} FROM diary_runs ORDER BY run_date"
    before = mariadb.query(database, select)
    fire = DIARY_RUN_COLUMNS.index("fire_time")
    started = DIARY_RUN_COLUMNS.index("started_at")
    # NULL fire times are backfilled from started_at, else the date's midnight.
    backfilled = [row[fire] or row[started] or datetime.combine(row[0], time()) for row in before]
    expected = [
        (*row[:fire], t, *row[fire + 1 :]) for row, t in zip(before, backfilled, strict=True)
    ]

    assert apply_migrations(mysql_conf(mariadb, database)) == ALL_VERSIONS
    after = mariadb.query(database, select)
    with cursor(mariadb, database) as cur:  # a re-run runs the unguarded statements only
        rerun = run_migration(cur, available_migrations()[3])

    assert [step.unless for step in rerun] == [None, None, None]
    assert len(before) == 30 and sum(row[fire] is None for row in before) == 20
    assert after == expected
    assert mariadb.query(database, select) == expected
    assert indexes(mariadb, database, "diary_runs")["PRIMARY"] == ["run_date", "fire_time"]
    # A second fire time of a date that has a run is a second row now.
    mariadb.query(
        database,
        "INSERT INTO diary_runs (run_date, status, fire_time)"
        " VALUES ('2025-01-01', 'running', '2025-01-01 22:01:00')",
    )
    assert mariadb.query(
        database, "SELECT COUNT(*) FROM diary_runs WHERE run_date = '2025-01-01'"
    ) == [(2,)]


def test_a_migration_cut_after_its_ddl_is_reported_pending_and_reapplies_safely(
    mariadb: MariaDBServer, database: str
) -> None:
    conf = mysql_conf(mariadb, database)
    apply_migrations(conf)
    # As if the run died after the DDL of 002 to 004 but before recording them.
    mariadb.query(database, "DELETE FROM schema_migrations WHERE version > '001_seed'")

    assert pending_migrations(conf) == ALL_VERSIONS[1:]
    with pytest.raises(SchemaBehindError, match=", ".join(ALL_VERSIONS[1:])):
        check_schema(MysqlStore(conf))
    assert apply_migrations(conf) == ALL_VERSIONS[1:]
    check_schema(MysqlStore(conf))


def test_the_start_is_refused_on_a_schema_that_lacks_a_migration(
    mariadb: MariaDBServer, database: str, redis_conf: RedisConf, caplog: pytest.LogCaptureFixture
) -> None:
    conf = mysql_conf(mariadb, database)
    apply_migrations(conf)
    mariadb.query(database, f"DELETE FROM schema_migrations WHERE version = '{ALL_VERSIONS[-1]}'")
    config = replace(Config(), mysql=conf, redis=redis_conf)

    with caplog.at_level(logging.ERROR, logger="me2_scheduler.preflight"):
        assert preflight(config) == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("cannot start: MySQL ")
    assert f"lacks migration(s) {ALL_VERSIONS[-1]}; run `me2-scheduler init-db" in line


def test_a_new_database_has_every_migration_pending(mariadb: MariaDBServer, database: str) -> None:
    conf = mysql_conf(mariadb, database)

    assert pending_migrations(conf) == ALL_VERSIONS


def test_concurrent_migration_runs_apply_each_version_exactly_once(
    mariadb: MariaDBServer, database: str
) -> None:
    conf = mysql_conf(mariadb, database)
    results = run_together(*[lambda: apply_migrations(conf)] * 3)

    assert len(results) == 3
    assert sorted(version for result in results for version in result) == ALL_VERSIONS


def test_migrating_an_unreachable_server_raises_store_error_without_the_password() -> None:
    port = free_port()
    conf = MysqlConf(dsn=MysqlDsn(password="Sup3r-Secret!", port=port, database="me2", timeout_s=2))

    with pytest.raises(StoreError) as caught:
        apply_migrations(conf)

    assert f"127.0.0.1:{port}/me2" in str(caught.value)
    assert "Sup3r-Secret!" not in str(caught.value)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 'a;b'; SELECT \"c;d\"", ["SELECT 'a;b'", 'SELECT "c;d"']),
        ("SELECT 'it''s; fine'", ["SELECT 'it''s; fine'"]),
        ("-- a; comment\nSELECT 1 # another; one\n;", ["SELECT 1"]),
        ("/* block; */ SELECT `odd;name` - 1", ["SELECT `odd;name` - 1"]),
        ("  ;; \n", []),
    ],
)
def test_split_statements_splits_only_on_semicolons_outside_strings_and_comments(
    sql: str, expected: list[str]
) -> None:
    assert split_statements(sql) == expected
