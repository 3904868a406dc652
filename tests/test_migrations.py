"""Schema migrations on a real MariaDB: fresh databases, re-runs, cut runs, the seed's
table, databases migrated by the earlier texts, and SQL that MySQL 8 would reject."""

from __future__ import annotations

import ast
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pymysql
import pytest

from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_scheduler.config import Config, MysqlConf, MysqlDsn, RedisConf
from me2_scheduler.errors import SchemaBehindError, StoreError
from me2_scheduler.storage.migrations import (
    Guard,
    Migration,
    Step,
    apply_migrations,
    available_migrations,
    check_schema,
    latest_version,
    pending_migrations,
    run_migration,
    schema_status,
    split_statements,
    split_steps,
)
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.supervisor.preflight import preflight

STORAGE = Path(__file__).resolve().parent.parent / "me2_scheduler" / "storage"

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


@contextmanager
def cursor(mariadb: MariaDBServer, database: str) -> Iterator[pymysql.cursors.Cursor]:
    conn = pymysql.connect(
        host="127.0.0.1", port=mariadb.port, user="root", database=database, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


# The ledger exactly as every runner so far has created it.
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version VARCHAR(32) NOT NULL PRIMARY KEY,
    applied_at DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


def run_by_hand(
    mariadb: MariaDBServer,
    database: str,
    versions: list[str],
    *,
    texts: dict[str, str] | None = None,
    recorded: int = 0,
) -> None:
    """Run the statements of ``versions`` unguarded, in order (``texts`` replaces a
    version's file text), and record the first ``recorded`` of them as a runner does."""
    text = {migration.version: migration.sql for migration in available_migrations()}
    text.update(texts or {})
    with cursor(mariadb, database) as cur:
        for version in versions:
            for statement in split_statements(text[version]):
                cur.execute(statement)
        cur.execute(LEDGER_DDL)
        for version in versions[:recorded]:
            cur.execute("INSERT INTO schema_migrations VALUES (%s, NOW())", (version,))


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
    run_by_hand(mariadb, database, ALL_VERSIONS[:3])  # a database left at 003
    with cursor(mariadb, database) as cur:
        cur.executemany(
            f"INSERT INTO diary_runs ({', '.join(DIARY_RUN_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(DIARY_RUN_COLUMNS))})",
            [diary_runs_before_004(day) for day in range(30)],
        )
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
    with cursor(mariadb, database) as cur:  # a re-run runs the unguarded statements only
        rerun = run_migration(cur, available_migrations()[3])

    assert [step.unless for step in rerun] == [None, None, None]
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


# -- MySQL 8.0/8.4 portability --------------------------------------------------

# What MariaDB 10.11 accepts and MySQL 8.0/8.4 rejects (or reads otherwise),
# looked for in SQL with comments dropped and quoted text blanked.
MARIADB_ONLY = (
    (r"\bIF\s+(?:NOT\s+)?EXISTS\b",
     "IF [NOT] EXISTS other than on CREATE/DROP TABLE (MySQL has none on ALTER clauses,"
     " CREATE/DROP INDEX)"),
    (r"\bCREATE\s+OR\s+REPLACE\s+(?!VIEW\b)", "CREATE OR REPLACE (MySQL: views only)"),
    (r"\bRETURNING\b", "RETURNING"),
    (r"\b(?:CREATE|ALTER|DROP)\s+SEQUENCE\b|\b(?:NEXTVAL|LASTVAL|SETVAL)\s*\("
     r"|\b(?:NEXT|PREVIOUS)\s+VALUE\s+FOR\b", "sequences"),
    (r"\bALTER\s+(?:ONLINE|IGNORE)\b", "ALTER ONLINE / ALTER IGNORE"),
    (r"\bALGORITHM\s*=?\s*NOCOPY\b", "ALGORITHM=NOCOPY"),
    (r"\bWAIT\s+\d|\bNOWAIT\b", "WAIT n / NOWAIT"),
    (r"\bSET\s+STATEMENT\b", "SET STATEMENT ... FOR"),
    (r"\bWITH(?:OUT)?\s+SYSTEM\s+VERSIONING\b|\bPERIOD\s+FOR\b|\bFOR\s+SYSTEM_TIME\b",
     "system-versioned or application-time tables"),
    (r"\bPERSISTENT\b", "PERSISTENT generated columns (MySQL: STORED)"),
    (r"\b(?:IGNORED|INVISIBLE)\b", "ignored/invisible indexes (spelt differently on each)"),
    (r"\b(?:INET4|INET6|UUID)\b(?!\s*\()", "MariaDB's INET4/INET6/UUID types"),
    (r"\b\w+_uca1400_\w+|\b\w+_0900_\w+", "a collation only one of the two servers has"),
    (r"\bENGINE\s*=?\s*(?!InnoDB\b)\w+", "an engine other than InnoDB"),
    (r"\bOFFSET\s+\S+\s+ROWS?\b|\bFETCH\s+(?:FIRST|NEXT)\b", "OFFSET ... ROWS / FETCH FIRST"),
    (r"\bROWS\s+EXAMINED\b", "LIMIT ROWS EXAMINED"),
    (r"\b(?:EXCEPT|INTERSECT)\b", "EXCEPT/INTERSECT (MySQL 8.0.31+ only)"),
)  # fmt: skip
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`[^`]*`""")
_TABLE_IF_EXISTS = re.compile(
    r"^\s*(?:CREATE\s+(?:TEMPORARY\s+)?TABLE\s+IF\s+NOT\s+EXISTS"
    r"|DROP\s+(?:TEMPORARY\s+)?TABLE\s+IF\s+EXISTS)\b",
    re.IGNORECASE,
)


def mariadb_only(sql: str) -> list[str]:
    """What MySQL 8.0/8.4 would reject in ``sql``: one line per construct found."""
    found = []
    for statement in split_statements(sql):
        code = _TABLE_IF_EXISTS.sub("", _QUOTED.sub("''", statement), count=1)
        for pattern, what in MARIADB_ONLY:
            match = re.search(pattern, code, re.IGNORECASE)
            if match:
                found.append(f"{what}: {match.group(0)!r} in {' '.join(statement.split())[:70]!r}")
    return found


# The texts of 002 and 004 before they were made portable (MariaDB-only).
OLD_TEXTS = {
    "002_schedule_state": """
ALTER TABLE avatar_schedules
    ADD COLUMN IF NOT EXISTS last_failed_time DATETIME NULL COMMENT 'last failed dispatch time',
    ADD COLUMN IF NOT EXISTS last_error VARCHAR(512) NULL COMMENT 'last dispatch error',
    ADD COLUMN IF NOT EXISTS pause_reason ENUM('user', 'failures') NULL COMMENT 'why paused',
    ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0 COMMENT 'optimistic concurrency',
    ADD INDEX IF NOT EXISTS idx_status_avatar_id (status, avatar_id);
""",
    "004_diary_runs_per_fire": """
UPDATE diary_runs
SET fire_time = COALESCE(started_at, CAST(CONCAT(run_date, ' 00:00:00') AS DATETIME))
WHERE fire_time IS NULL;

ALTER TABLE diary_runs
    MODIFY COLUMN fire_time DATETIME NOT NULL COMMENT 'cron fire time (manual run: when asked)',
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (run_date, fire_time),
    ADD INDEX IF NOT EXISTS idx_fire_time (fire_time),
    COMMENT = 'diary run per fire time';
""",
}


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS c INT",
        "ALTER TABLE t ADD INDEX IF NOT EXISTS i (c)",
        "alter table t add column c int, add key if not exists i (c)",
        "ALTER TABLE t DROP INDEX IF EXISTS i",
        "ALTER TABLE t MODIFY COLUMN IF EXISTS c BIGINT",
        "DROP INDEX IF EXISTS i ON t",
        "CREATE INDEX IF NOT EXISTS i ON t (c)",
        "CREATE OR REPLACE TABLE t (id INT)",
        "INSERT INTO t (c) VALUES (1) RETURNING id",
        "DELETE FROM t WHERE c = 1 RETURNING id",
        "CREATE SEQUENCE s",
        "ALTER TABLE t ADD COLUMN c INT, ALGORITHM=NOCOPY",
        "ALTER TABLE t WAIT 5 ADD COLUMN c INT",
        "CREATE TABLE t (id INT) WITH SYSTEM VERSIONING",
        "CREATE TABLE t (id INT) ENGINE=Aria",
        "CREATE TABLE t (c VARCHAR(5)) COLLATE=utf8mb4_uca1400_ai_ci",
        "SET STATEMENT max_statement_time=1 FOR SELECT 1",
        "SELECT 1; ALTER TABLE t ADD COLUMN IF NOT EXISTS c INT",
    ],
)
def test_the_portability_check_finds_a_mariadb_only_construct(sql: str) -> None:
    assert mariadb_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        SEED_DDL,
        "DROP TABLE IF EXISTS t",
        "ALTER TABLE t ADD COLUMN c INT COMMENT 'returning if not exists, uuid'",
        "-- ALTER TABLE t ADD COLUMN IF NOT EXISTS c INT\nSELECT 1",
        "ALTER TABLE t ADD COLUMN c INT, ALGORITHM=INSTANT",
        "SELECT UUID()",
        "CREATE OR REPLACE VIEW v AS SELECT 1",
        "SELECT id FROM t ORDER BY id LIMIT 5 OFFSET 10 FOR UPDATE SKIP LOCKED",
    ],
)
def test_the_portability_check_passes_sql_both_servers_take(sql: str) -> None:
    assert mariadb_only(sql) == []


def test_no_migration_file_holds_a_mariadb_only_construct() -> None:
    problems = {m.version: mariadb_only(m.sql) for m in available_migrations()}

    assert problems == {m.version: [] for m in available_migrations()}


def test_the_portability_check_would_catch_if_not_exists_put_back_into_an_alter() -> None:
    (schedule_state,) = [m.sql for m in available_migrations() if m.version == ALL_VERSIONS[1]]
    put_back = schedule_state.replace(
        "ADD COLUMN last_error", "ADD COLUMN IF NOT EXISTS last_error"
    )

    assert put_back != schedule_state
    assert len(mariadb_only(put_back)) == 1
    assert all(mariadb_only(text) for text in OLD_TEXTS.values())


def _sql_strings(path: Path) -> Iterator[str]:
    """The string literals in ``path`` that begin like SQL (docstrings aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            text = node.value
        else:
            continue
        if re.match(r"\s*\(?\s*(?:SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP|SET)\b",
                    text):  # fmt: skip
            yield text


def test_the_runtime_sql_in_storage_has_no_mariadb_only_construct() -> None:
    modules = sorted(STORAGE.glob("*.py"))
    found = {path.name: [p for sql in _sql_strings(path) for p in mariadb_only(sql)]
             for path in modules}  # fmt: skip

    assert sum(1 for path in modules for _ in _sql_strings(path)) > 20  # the scan sees the SQL
    assert found == {path.name: [] for path in modules}


def rerun_problems(step: Step) -> list[str]:
    """Why running ``step`` again after it ran would fail or change something."""
    code = " ".join(_QUOTED.sub("''", step.sql).split())
    alter = re.match(r"ALTER\s+TABLE\s+(\w+)\s", code, re.IGNORECASE)
    changes = re.findall(r"\b(?:ADD|DROP|RENAME)\b", code, re.IGNORECASE)
    guard = step.unless
    if re.match(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b|RENAME\b|DROP\b", code, re.IGNORECASE):
        return [] if guard else [f"no guard on {code[:60]!r}"]
    if re.match(r"CREATE\s+TABLE\b", code, re.IGNORECASE):
        ok = re.match(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\b", code, re.IGNORECASE) or guard
        return [] if ok else [f"no IF NOT EXISTS nor guard on {code[:60]!r}"]
    if not alter or not changes:
        return []  # an UPDATE, MODIFY or COMMENT: the cut-run tests prove them re-runnable
    if guard is None:
        return [f"no guard on {code[:60]!r}"]
    name = "PRIMARY KEY" if guard.name == "PRIMARY" else guard.name
    problems = []
    if guard.table != alter.group(1) or not re.search(rf"\b{name}\b", code):
        problems.append(f"the guard '{guard}' does not name what {code[:60]!r} adds")
    if len(re.findall(r"\bADD\b", code, re.IGNORECASE)) > 1:
        problems.append(f"one guard for several additions in {code[:60]!r}: split it")
    return problems


def test_every_statement_a_rerun_would_repeat_carries_a_guard_naming_its_change() -> None:
    problems = [p for m in available_migrations() for s in m.steps() for p in rerun_problems(s)]

    assert problems == []
    assert sum(step.unless is not None for m in available_migrations() for step in m.steps()) == 7


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE t ADD COLUMN c INT",
        "-- unless column t.d\nALTER TABLE t ADD COLUMN c INT",
        "-- unless column u.c\nALTER TABLE t ADD COLUMN c INT",
        "-- unless column t.c\nALTER TABLE t ADD COLUMN c INT, ADD COLUMN d INT",
        "CREATE TABLE t (id INT)",
        "CREATE INDEX i ON t (c)",
    ],
)
def test_the_guard_check_finds_a_change_a_rerun_would_repeat(sql: str) -> None:
    assert [p for step in split_steps(sql) for p in rerun_problems(step)]


# -- guards -------------------------------------------------------------------------


def test_a_guard_comment_above_a_statement_becomes_its_step_guard() -> None:
    steps = split_steps(
        "-- prose first\n-- unless index diary_runs.PRIMARY (run_date, fire_time)\n"
        "ALTER TABLE diary_runs DROP PRIMARY KEY, ADD PRIMARY KEY (run_date, fire_time);\n"
        "-- unless column t.c\nALTER TABLE t ADD COLUMN c INT; UPDATE t SET c = 1;\n"
        "-- unless table t2\nCREATE TABLE t2 (id INT)"
    )

    assert [step.unless for step in steps] == [
        Guard("index", "diary_runs", "PRIMARY", ("run_date", "fire_time")),
        Guard("column", "t", "c"),
        None,
        Guard("table", "t2"),
    ]
    assert steps[1].sql == "ALTER TABLE t ADD COLUMN c INT"
    assert str(steps[0].unless) == "index diary_runs.PRIMARY (run_date, fire_time)"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("-- unless column t\nALTER TABLE t ADD COLUMN c INT", "unreadable guard"),
        ("-- unless table t.c\nCREATE TABLE t (c INT)", "unreadable guard"),
        ("-- unless column t.c (c)\nALTER TABLE t ADD COLUMN c INT", "unreadable guard"),
        ("-- unless index t.i (a,)\nALTER TABLE t ADD INDEX i (a)", "unreadable guard"),
        ("-- unless colum t.c\nALTER TABLE t ADD COLUMN c INT", "unreadable guard"),
        ("-- unless column t.c\n-- unless column t.d\nALTER TABLE t ADD c INT, ADD d INT",
         "one guard per statement"),
        ("SELECT 1;\n-- unless table t\n", "followed by no statement"),
    ],
)  # fmt: skip
def test_a_misplaced_or_malformed_guard_is_refused_with_the_migration_named(
    sql: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split_steps(sql)
    with pytest.raises(StoreError, match=f"migration 009_broken: .*{message}"):
        Migration("009_broken", sql).steps()


def test_every_shipped_guard_is_present_once_migrated_and_a_near_miss_is_not(
    mariadb: MariaDBServer, database: str
) -> None:
    apply_migrations(mysql_conf(mariadb, database))
    guards = [step.unless for m in available_migrations() for step in m.steps() if step.unless]

    with cursor(mariadb, database) as cur:
        assert [guard for guard in guards if not guard.present(cur)] == []
        assert not Guard("index", "diary_runs", "PRIMARY", ("run_date",)).present(cur)
        assert not Guard("index", "diary_runs", "PRIMARY", ("fire_time", "run_date")).present(cur)
        assert Guard("index", "diary_runs", "primary", ("RUN_DATE", "fire_time")).present(cur)
        assert not Guard("index", "avatar_schedules", "idx_fire_time").present(cur)
        assert not Guard("column", "diary_runs", "last_error").present(cur)
        assert not Guard("table", "no_such_table").present(cur)
        assert Guard("table", "diary_runs").present(cur)


# -- cut runs, and databases migrated by the earlier texts --------------------------


def schema(mariadb: MariaDBServer, database: str) -> dict[str, list[tuple]]:
    """Every table's options, columns and indexes (the ledger aside)."""
    where_ = "WHERE TABLE_SCHEMA = %s AND TABLE_NAME <> 'schema_migrations'"
    selects = {
        "tables": "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION, TABLE_COMMENT"
        f" FROM information_schema.TABLES {where_} ORDER BY 1",
        "columns": "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE,"
        " COLUMN_DEFAULT, EXTRA, COLUMN_COMMENT, COLLATION_NAME, COLUMN_KEY"
        f" FROM information_schema.COLUMNS {where_} ORDER BY 1, 3",
        "indexes": "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE"
        f" FROM information_schema.STATISTICS {where_} ORDER BY 1, 2, 3",
    }
    return {part: query(mariadb, database, sql, (database,)) for part, sql in selects.items()}


@pytest.fixture(scope="module")
def migrated_schema(mariadb: MariaDBServer) -> dict[str, list[tuple]]:
    """The schema the shipped migrations build on an empty database."""
    name = f"ref_{uuid.uuid4().hex[:10]}"
    mariadb.create_database(name)
    try:
        apply_migrations(mysql_conf(mariadb, name))
        return schema(mariadb, name)
    finally:
        mariadb.drop_database(name)


CUTS = [
    (index, done)
    for index, migration in enumerate(available_migrations())
    for done in range(1, len(migration.steps()) + 1)
]


@pytest.mark.parametrize(("index", "done"), CUTS, ids=[f"{ALL_VERSIONS[i]}-{d}" for i, d in CUTS])
def test_a_run_cut_after_any_statement_completes_on_the_next_run(
    mariadb: MariaDBServer, database: str, migrated_schema: dict, index: int, done: int
) -> None:
    run_by_hand(mariadb, database, ALL_VERSIONS[:index], recorded=index)
    with cursor(mariadb, database) as cur:  # the cut run: its first `done` statements
        for step in available_migrations()[index].steps()[:done]:
            cur.execute(step.sql)
    conf = mysql_conf(mariadb, database)

    assert apply_migrations(conf) == ALL_VERSIONS[index:]
    assert schema(mariadb, database) == migrated_schema
    assert pending_migrations(conf) == []


def test_columns_and_an_index_added_by_hand_out_of_order_are_kept_and_the_rest_added(
    mariadb: MariaDBServer, database: str, migrated_schema: dict
) -> None:
    run_by_hand(mariadb, database, ALL_VERSIONS[:1], recorded=1)
    query(mariadb, database, "ALTER TABLE avatar_schedules"
          " ADD COLUMN version BIGINT NOT NULL DEFAULT 0 COMMENT 'optimistic concurrency',"
          " ADD INDEX idx_status_avatar_id (status, avatar_id)")  # fmt: skip
    query(mariadb, database, "ALTER TABLE avatar_schedules"
          " ADD COLUMN last_error VARCHAR(512) NULL COMMENT 'last dispatch error'")  # fmt: skip

    assert apply_migrations(mysql_conf(mariadb, database)) == ALL_VERSIONS[1:]

    def without_positions(found: dict[str, list[tuple]]) -> dict[str, object]:
        return {**found, "columns": sorted(row[:2] + row[3:] for row in found["columns"])}

    assert without_positions(schema(mariadb, database)) == without_positions(migrated_schema)
    assert list(columns(mariadb, database, "avatar_schedules"))[-4:] == [
        "version", "last_error", "last_failed_time", "pause_reason",
    ]  # fmt: skip


def preflight_config(mariadb: MariaDBServer, database: str, redis_server: RedisServer) -> Config:
    redis = RedisConf(host=redis_server.address, key=f"test:{uuid.uuid4().hex[:12]}")
    return replace(Config(), mysql=mysql_conf(mariadb, database), redis=redis)


def test_a_database_migrated_by_the_earlier_texts_starts_as_it_is(
    mariadb: MariaDBServer, database: str, redis_server: RedisServer, migrated_schema: dict
) -> None:
    run_by_hand(mariadb, database, ALL_VERSIONS, texts=OLD_TEXTS, recorded=len(ALL_VERSIONS))
    config = preflight_config(mariadb, database, redis_server)

    assert preflight(config) == 0
    assert pending_migrations(config.mysql) == []
    assert apply_migrations(config.mysql) == []
    assert schema(mariadb, database) == migrated_schema  # what the earlier texts built


@pytest.mark.parametrize(("ran", "recorded"), [(2, 2), (3, 1), (4, 1), (4, 3)])
def test_a_database_part_migrated_by_the_earlier_texts_is_brought_up_by_the_new_ones(
    mariadb: MariaDBServer, database: str, redis_server: RedisServer, migrated_schema: dict,
    ran: int, recorded: int,
) -> None:  # fmt: skip
    run_by_hand(mariadb, database, ALL_VERSIONS[:ran], texts=OLD_TEXTS, recorded=recorded)
    config = preflight_config(mariadb, database, redis_server)

    assert preflight(config) == 1  # behind: init-db first
    assert apply_migrations(config.mysql) == ALL_VERSIONS[recorded:]
    assert preflight(config) == 0
    assert schema(mariadb, database) == migrated_schema
