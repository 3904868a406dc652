"""Schema migrations on a real MariaDB: fresh databases, re-runs, and the seed's table."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta

import pymysql
import pytest

from me2_scheduler.config import MysqlConf, MysqlDsn
from me2_scheduler.errors import SchemaBehindError, StoreError
from me2_scheduler.storage.migrations import (
    apply_migrations,
    available_migrations,
    check_schema,
    latest_version,
    pending_migrations,
    schema_status,
    split_statements,
)
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.testing.servers import MariaDBServer, free_port

# The seed document's DDL, copied verbatim: what the Go original created.
SEED_DDL = """
CREATE TABLE IF NOT EXISTS avatar_schedules (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    avatar_id BIGINT NOT NULL UNIQUE COMMENT '分身ID',
    status ENUM('active', 'paused', 'disabled') DEFAULT 'active' COMMENT '调度状态',
    next_schedule_time DATETIME NOT NULL COMMENT '下次调度时间',
    last_schedule_time DATETIME DEFAULT NULL COMMENT '上次调度时间',
    last_action_type VARCHAR(50) DEFAULT NULL COMMENT '上次行为类型',
    schedule_count INT DEFAULT 0 COMMENT '总调度次数',
    failed_count INT DEFAULT 0 COMMENT '失败次数',
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    INDEX idx_next_schedule_time (next_schedule_time, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='分身调度配置表'
"""
SEED_COLUMNS = (
    "id", "avatar_id", "status", "next_schedule_time", "last_schedule_time",
    "last_action_type", "schedule_count", "failed_count", "created_at", "updated_at",
)  # fmt: skip
ALL_VERSIONS = [
    "001_seed", "002_schedule_state", "003_history_and_diary_runs", "004_diary_runs_per_fire",
]  # fmt: skip


def mysql_conf(mariadb: MariaDBServer, database: str, **dsn: object) -> MysqlConf:
    fields = {"user": "root", "host": "127.0.0.1", "port": mariadb.port, "database": database}
    fields.update(dsn)
    return MysqlConf(data_source=mariadb.dsn(database), dsn=MysqlDsn(**fields, timeout_s=5))


def query(mariadb: MariaDBServer, database: str, sql: str, args: object = None) -> list[tuple]:
    return mariadb.query(database, sql, args)


def columns(mariadb: MariaDBServer, database: str, table: str) -> dict[str, tuple]:
    rows = query(
        mariadb, database,
        "SELECT COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT,"
        " EXTRA, COLUMN_COMMENT, COLLATION_NAME, COLUMN_KEY FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )  # fmt: skip
    return {row[0]: row[1:] for row in rows}


def indexes(mariadb: MariaDBServer, database: str, table: str) -> dict[str, list[str]]:
    rows = query(
        mariadb, database,
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        (database, table),
    )  # fmt: skip
    found: dict[str, list[str]] = {}
    for name, column in rows:
        found.setdefault(name, []).append(column)
    return found


def table_options(mariadb: MariaDBServer, database: str, table: str) -> tuple:
    (row,) = query(
        mariadb, database,
        "SELECT ENGINE, TABLE_COLLATION, TABLE_COMMENT FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (database, table),
    )  # fmt: skip
    return row


@pytest.fixture
def other_database(mariadb: MariaDBServer) -> Iterator[str]:
    name = f"seed_{uuid.uuid4().hex[:10]}"
    mariadb.create_database(name)
    try:
        yield name
    finally:
        mariadb.drop_database(name)


def test_the_shipped_migrations_are_the_four_versions_in_order() -> None:
    assert [m.version for m in available_migrations()] == ALL_VERSIONS
    assert latest_version() == ALL_VERSIONS[-1]


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
    }
    history = columns(mariadb, database, "avatar_schedule_history")
    assert list(history) == [
        "id", "avatar_id", "trigger", "planned_time", "started_time", "finished_time",
        "outcome", "action_type", "action_id", "error", "lag_ms", "idempotency_key",
    ]  # fmt: skip
    assert history["outcome"][1] == "enum('success','failure','skipped')"
    assert indexes(mariadb, database, "avatar_schedule_history") == {
        "PRIMARY": ["id"],
        "idx_avatar_id_id": ["avatar_id", "id"],
        "idx_started_time": ["started_time"],
    }
    diary = columns(mariadb, database, "diary_runs")
    assert list(diary) == [
        "run_date", "status", "checkpoint_avatar_id", "success_count", "failure_count",
        "total", "owner", "fire_time", "started_at", "heartbeat_at", "finished_at",
    ]  # fmt: skip
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
    query(mariadb, other_database, SEED_DDL)

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
    assert query(mariadb, database, "SELECT COUNT(*) FROM schema_migrations") == [(4,)]


def test_a_seed_table_holding_rows_upgrades_without_losing_any(
    mariadb: MariaDBServer, database: str
) -> None:
    query(mariadb, database, SEED_DDL)
    statuses = ("active", "paused", "disabled")
    rows = [
        (
            1000 + i * 7, statuses[i % 3], datetime(2026, 1, 1 + i % 28, i % 24, i % 60, 5),
            None if i % 4 else datetime(2025, 12, 31, 23, 59, i % 60),
            None if i % 5 else f"post-{i}", i, i % 6,
        )
        for i in range(1000)
    ]  # fmt: skip
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
    before = query(mariadb, database, select_seed)

    assert apply_migrations(mysql_conf(mariadb, database)) == ALL_VERSIONS

    assert len(before) == 1000
    assert query(mariadb, database, select_seed) == before
    assert query(
        mariadb, database,
        "SELECT COUNT(*) FROM avatar_schedules WHERE version = 0 AND last_failed_time IS NULL"
        " AND last_error IS NULL AND pause_reason IS NULL",
    ) == [(1000,)]  # fmt: skip


DIARY_RUN_COLUMNS = (
    "run_date", "status", "checkpoint_avatar_id", "success_count", "failure_count", "total",
    "owner", "fire_time", "started_at", "heartbeat_at", "finished_at",
)  # fmt: skip


def diary_runs_before_004(day: int) -> tuple:
    """A row as 003 allowed it: fire_time set, or NULL with or without started_at."""
    run_date = date(2025, 1, 1) + timedelta(days=day)
    evening = datetime.combine(run_date, time(22, 0))
    fire_time = evening if day % 3 == 0 else None
    started_at = None if day % 3 == 2 else evening + timedelta(minutes=5, seconds=day)
    finished = started_at + timedelta(minutes=30) if started_at and day % 2 else None
    status = ("done", "failed")[day % 2] if finished else "running"
    return (
        run_date, status, day * 10, day * 9, day, day * 10 if finished else None,
        f"host-{day}:1", fire_time, started_at, started_at, finished,
    )  # fmt: skip


def test_migration_004_keys_a_diary_runs_table_holding_rows_by_fire_time_losing_none(
    mariadb: MariaDBServer, database: str
) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", database=database)
    with conn.cursor() as cur:
        for migration in available_migrations()[:3]:  # a database left at 003
            for statement in migration.statements():
                cur.execute(statement)
        cur.executemany(
            f"INSERT INTO diary_runs ({', '.join(DIARY_RUN_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(DIARY_RUN_COLUMNS))})",
            [diary_runs_before_004(day) for day in range(30)],
        )
    conn.commit()
    conn.close()
    select = f"SELECT {', '.join(DIARY_RUN_COLUMNS)} FROM diary_runs ORDER BY run_date"
    before = query(mariadb, database, select)
    fire = DIARY_RUN_COLUMNS.index("fire_time")
    started = DIARY_RUN_COLUMNS.index("started_at")
    # NULL fire times are backfilled from started_at, else the date's midnight.
    backfilled = [row[fire] or row[started] or datetime.combine(row[0], time()) for row in before]
    expected = [
        (*row[:fire], t, *row[fire + 1 :]) for row, t in zip(before, backfilled, strict=True)
    ]

    assert apply_migrations(mysql_conf(mariadb, database)) == ALL_VERSIONS
    after = query(mariadb, database, select)
    for statement in available_migrations()[3].statements():  # re-run: changes nothing
        query(mariadb, database, statement)

    assert len(before) == 30 and sum(row[fire] is None for row in before) == 20
    assert after == expected
    assert query(mariadb, database, select) == expected
    assert indexes(mariadb, database, "diary_runs")["PRIMARY"] == ["run_date", "fire_time"]
    # A second fire time of a date that has a run is a second row now.
    query(
        mariadb, database,
        "INSERT INTO diary_runs (run_date, status, fire_time)"
        " VALUES ('2025-01-01', 'running', '2025-01-01 22:01:00')",
    )  # fmt: skip
    assert query(
        mariadb, database, "SELECT COUNT(*) FROM diary_runs WHERE run_date = '2025-01-01'"
    ) == [(2,)]


def test_a_migration_cut_after_its_ddl_is_reported_pending_and_reapplies_safely(
    mariadb: MariaDBServer, database: str
) -> None:
    conf = mysql_conf(mariadb, database)
    apply_migrations(conf)
    # As if the run died after the DDL of 002 to 004 but before recording them.
    query(mariadb, database, "DELETE FROM schema_migrations WHERE version > '001_seed'")

    assert pending_migrations(conf) == ALL_VERSIONS[1:]
    assert schema_status(conf) == ("001_seed", ALL_VERSIONS[-1])
    with pytest.raises(SchemaBehindError, match=", ".join(ALL_VERSIONS[1:])):
        check_schema(MysqlStore(conf))
    assert apply_migrations(conf) == ALL_VERSIONS[1:]
    check_schema(MysqlStore(conf))


def test_schema_status_of_a_new_database_is_nothing_applied(
    mariadb: MariaDBServer, database: str
) -> None:
    conf = mysql_conf(mariadb, database)

    assert schema_status(conf) == (None, ALL_VERSIONS[-1])
    assert pending_migrations(conf) == ALL_VERSIONS


def test_concurrent_migration_runs_apply_each_version_exactly_once(
    mariadb: MariaDBServer, database: str
) -> None:
    conf = mysql_conf(mariadb, database)
    results: list[list[str]] = []
    start = threading.Barrier(3)

    def run() -> None:
        start.wait()
        results.append(apply_migrations(conf))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

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
