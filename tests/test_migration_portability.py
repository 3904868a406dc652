"""The migrations and the runtime SQL are portable to MySQL 8.0/8.4: no MariaDB-only construct."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from me2_scheduler.storage.migrations import available_migrations, split_statements

from .fixtures_migrations import ALL_VERSIONS, OLD_TEXTS, QUOTED, SEED_DDL

STORAGE = Path(__file__).resolve().parent.parent / "me2_scheduler" / "storage"


# What MariaDB 10.11 accepts and MySQL 8.0/8.4 rejects (or reads otherwise),
# looked for in SQL with comments dropped and quoted text blanked.
MARIADB_ONLY = (
    (
        r"\bIF\s+(?:NOT\s+)?EXISTS\b",
        "IF [NOT] EXISTS other than on CREATE/DROP TABLE (MySQL has none on ALTER clauses,"
        " CREATE/DROP INDEX)",
    ),
    (r"\bCREATE\s+OR\s+REPLACE\s+(?!VIEW\b)", "CREATE OR REPLACE (MySQL: views only)"),
    (r"\bRETURNING\b", "RETURNING"),
    (
        r"\b(?:CREATE|ALTER|DROP)\s+SEQUENCE\b|\b(?:NEXTVAL|LASTVAL|SETVAL)\s*\("
        r"|\b(?:NEXT|PREVIOUS)\s+VALUE\s+FOR\b",
        "sequences",
    ),
    (r"\bALTER\s+(?:ONLINE|IGNORE)\b", "ALTER ONLINE / ALTER IGNORE"),
    (r"\bALGORITHM\s*=?\s*NOCOPY\b", "ALGORITHM=NOCOPY"),
    (r"\bWAIT\s+\d|\bNOWAIT\b", "WAIT n / NOWAIT"),
    (r"\bSET\s+STATEMENT\b", "SET STATEMENT ... FOR"),
    (
        r"\bWITH(?:OUT)?\s+SYSTEM\s+VERSIONING\b|\bPERIOD\s+FOR\b|\bFOR\s+SYSTEM_TIME\b",
        "system-versioned or application-time tables",
    ),
    (r"\bPERSISTENT\b", "PERSISTENT generated columns (MySQL: STORED)"),
    (r"\b(?:IGNORED|INVISIBLE)\b", "ignored/invisible indexes (spelt differently on each)"),
    (r"\b(?:INET4|INET6|UUID)\b(?!\s*\()", "MariaDB's INET4/INET6/UUID types"),
    (r"\b\w+_uca1400_\w+|\b\w+_0900_\w+", "a collation only one of the two servers has"),
    (r"\bENGINE\s*=?\s*(?!InnoDB\b)\w+", "an engine other than InnoDB"),
    (r"\bOFFSET\s+\S+\s+ROWS?\b|\bFETCH\s+(?:FIRST|NEXT)\b", "OFFSET ... ROWS / FETCH FIRST"),
    (r"\bROWS\s+EXAMINED\b", "LIMIT ROWS EXAMINED"),
    (r"\b(?:EXCEPT|INTERSECT)\b", "EXCEPT/INTERSECT (MySQL 8.0.31+ only)"),
)
_TABLE_IF_EXISTS = re.compile(
    r"^\s*(?:CREATE\s+(?:TEMPORARY\s+)?TABLE\s+IF\s+NOT\s+EXISTS"
    r"|DROP\s+(?:TEMPORARY\s+)?TABLE\s+IF\s+EXISTS)\b",
    re.IGNORECASE,
)


def mariadb_only(sql: str) -> list[str]:
    """What MySQL 8.0/8.4 would reject in ``sql``: one line per construct found."""
    found = []
    for statement in split_statements(sql):
        code = _TABLE_IF_EXISTS.sub("", QUOTED.sub("''", statement), count=1)
        for pattern, what in MARIADB_ONLY:
            match = re.search(pattern, code, re.IGNORECASE)
            if match:
                found.append(f"{what}: {match.group(0)!r} in {' '.join(statement.split())[:70]!r}")
    return found


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
        if re.match(
            r"\s*\(?\s*(?:SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP|SET)\b", text
        ):
            yield text


def test_the_runtime_sql_in_storage_has_no_mariadb_only_construct() -> None:
    modules = sorted(STORAGE.glob("*.py"))
    found = {
        path.name: [p for sql in _sql_strings(path) for p in mariadb_only(sql)] for path in modules
    }

    assert sum(1 for path in modules for _ in _sql_strings(path)) > 20  # the scan sees the SQL
    assert found == {path.name: [] for path in modules}
