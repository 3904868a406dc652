"""What the migration tests share: the seed's DDL and its fingerprint, the shipped versions,
runs by hand, and readers of information_schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pymysql

from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.storage.migrations import available_migrations, split_statements

# The seed's CREATE TABLE as 001_seed.sql ships it. It must be the seed document's own text
# (its ```sql block, without the final ";"), which is not in the repository: this is the
# sha256 of that text, so an edit of 001_seed.sql is caught (test_migrations.py).
(SEED_DDL,) = split_statements(
    next(m.sql for m in available_migrations() if m.version == "001_seed")
)
SEED_DOCUMENT_DDL_SHA256 = "6058afd8e27760b296fafc8ef7e59a8f9f572667a86a2d4a2b05ba71e598c55a"
SEED_COLUMNS = (
    "id",
    "avatar_id",
    "status",
    "next_schedule_time",
    "last_schedule_time",
    "last_action_type",
    "schedule_count",
    "failed_count",
    "created_at",
    "updated_at",
)
ALL_VERSIONS = [
    "001_seed",
    "002_schedule_state",
    "003_history_and_diary_runs",
    "004_diary_runs_per_fire",
    "005_schedule_policies",
    "006_paused_by_reason",
]

# Quoted text in SQL: blanked before a statement is searched for keywords.
QUOTED = re.compile(r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`[^`]*`""")


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
    rows = mariadb.query(
        database,
        "SELECT COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT,"
        " EXTRA, COLUMN_COMMENT, COLLATION_NAME, COLUMN_KEY FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    return {row[0]: row[1:] for row in rows}


def indexes(mariadb: MariaDBServer, database: str, table: str) -> dict[str, list[str]]:
    rows = mariadb.query(
        database,
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        (database, table),
    )
    found: dict[str, list[str]] = {}
    for name, column in rows:
        found.setdefault(name, []).append(column)
    return found


def table_options(mariadb: MariaDBServer, database: str, table: str) -> tuple:
    (row,) = mariadb.query(
        database,
        "SELECT ENGINE, TABLE_COLLATION, TABLE_COMMENT FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (database, table),
    )
    return row


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
