"""Versioned schema migrations: ``storage/migrations/NNN_name.sql``, applied in order.

The version of a migration is its file name without ``.sql`` (``001_seed``);
``schema_migrations`` records those applied, by version only: no checksum, so
a file whose text is rewritten without changing its effect (as 002 and 004
were, to run on MySQL 8) leaves databases that applied the earlier text
alone. The tests compare the schema each text builds.

MySQL commits DDL statement by statement, so a migration cannot be rolled
back half-way; it is recorded only after all its statements ran, and every
statement must be safe to run again. The SQL stays portable between MySQL
8.0/8.4 and MariaDB 10.11 (MySQL has no ``ADD COLUMN IF NOT EXISTS``), so a
statement that is not re-runnable by itself (an ``ALTER TABLE ... ADD``)
carries a guard, a comment line just above it, and is skipped when
information_schema shows its effect::

    -- unless column avatar_schedules.last_error
    -- unless index diary_runs.idx_fire_time
    -- unless index diary_runs.PRIMARY (run_date, fire_time)
    -- unless table diary_runs

An index guard with columns needs exactly those, in order. One guard per
statement, so a guarded ``ALTER`` makes one change. An existing seed-shaped
database (the Go original's table, no ``schema_migrations``) is upgraded in
place: ``001_seed`` finds its table and changes nothing, the later ones add to
it. Concurrent runs are serialised with ``GET_LOCK``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import pymysql

from me2_scheduler.clock import utc_now
from me2_scheduler.config import MysqlConf
from me2_scheduler.errors import SchemaBehindError, StoreError
from me2_scheduler.storage.mysql_conn import named_lock, open_connection, translated, where, zone
from me2_scheduler.storage.rows import to_db

if TYPE_CHECKING:
    from me2_scheduler.storage.mysql import MysqlStore

LOCK_TIMEOUT_S = 60
_NAME = re.compile(r"^(\d{3}_[a-z0-9_]+)\.sql$")
_NO_SUCH_TABLE = 1146
_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version VARCHAR(32) NOT NULL PRIMARY KEY,
    applied_at DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""
# Strings, quoted names and comments are matched whole, so a ';' inside one
# never splits a statement.
_TOKEN = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`[^`]*`"""
    r"""|(?P<comment>--[^\n]*|\#[^\n]*|/\*.*?\*/)|(?P<end>;)|[^'"`;#/-]+|.""",
    re.DOTALL,
)
# A guard: "-- unless" then "table T", "column T.C" or "index T.I [(C, ...)]".
_GUARD = re.compile(r"--\s*unless\b(?P<guard>.*)")
_GUARD_BODY = re.compile(
    r"(?P<kind>table|column|index)\s+(?P<table>\w+)(?:\.(?P<name>\w+))?"
    r"(?:\s*\((?P<columns>\s*\w+(?:\s*,\s*\w+)*\s*)\))?"
)
_GUARD_FORMS = "'table T', 'column T.C' or 'index T.I' with optional '(C, ...)'"
_TABLE_EXISTS = (
    "SELECT COUNT(*) FROM information_schema.TABLES"
    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
)
_COLUMN_EXISTS = (
    "SELECT COUNT(*) FROM information_schema.COLUMNS"
    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s"
)
_INDEX_COLUMNS = (
    "SELECT COLUMN_NAME FROM information_schema.STATISTICS"
    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND INDEX_NAME = %s"
    " ORDER BY SEQ_IN_INDEX"
)


@dataclass(frozen=True)
class Guard:
    """What a step creates, looked up in information_schema: a table, a column or an index.

    ``columns`` (indexes only) are the index's columns in order; empty means
    any index of that name will do.
    """

    kind: str  # "table", "column" or "index"
    table: str
    name: str = ""
    columns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Guard:
        """The guard ``text`` (what follows ``-- unless``) names; raise ValueError if malformed."""
        match = _GUARD_BODY.fullmatch(text.strip())
        kind = match["kind"] if match else ""
        if (
            not match
            or (kind == "table") == bool(match["name"])
            or (match["columns"] and kind != "index")
        ):
            raise ValueError(f"unreadable guard '-- unless {text.strip()}'; write {_GUARD_FORMS}")
        columns = match["columns"].split(",") if match["columns"] else []
        return cls(kind, match["table"], match["name"] or "", tuple(c.strip() for c in columns))

    def __str__(self) -> str:
        target = f"{self.table}.{self.name}" if self.name else self.table
        return f"{self.kind} {target}" + (f" ({', '.join(self.columns)})" if self.columns else "")

    def present(self, cur: pymysql.cursors.Cursor) -> bool:
        """True when the current database already has what the guard names."""
        if self.kind == "table":
            cur.execute(_TABLE_EXISTS, (self.table,))
            return cur.fetchone()[0] > 0
        if self.kind == "column":
            cur.execute(_COLUMN_EXISTS, (self.table, self.name))
            return cur.fetchone()[0] > 0
        cur.execute(_INDEX_COLUMNS, (self.table, self.name))
        # Names compare case-blind, as MySQL compares column and index names.
        found = [str(column).lower() for (column,) in cur.fetchall()]
        wanted = [column.lower() for column in self.columns]
        return bool(found) and (not wanted or found == wanted)


@dataclass(frozen=True)
class Step:
    """One statement of a migration, skipped when its guard (``unless``) is present."""

    sql: str
    unless: Guard | None = None


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the file stem) and SQL text."""

    version: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, comments (guards too) removed."""
        return split_statements(self.sql)

    def steps(self) -> list[Step]:
        """The file's statements with their guards; raise StoreError for a malformed guard."""
        try:
            return split_steps(self.sql)
        except ValueError as exc:
            raise StoreError(f"migration {self.version}: {exc}") from None


def _split(sql: str) -> Iterator[tuple[str, list[str]]]:
    """Each statement of ``sql`` (comments removed) with the comments before and in it."""
    current: list[str] = []
    comments: list[str] = []
    for token in _TOKEN.finditer(sql):
        if token.group("comment"):
            comments.append(token.group(0))
        elif token.group("end"):
            yield "".join(current).strip(), comments
            current, comments = [], []
        else:
            current.append(token.group(0))
    yield "".join(current).strip(), comments


def split_statements(sql: str) -> list[str]:
    """Split SQL text on ``;`` outside strings, quoted names and comments."""
    return [statement for statement, _ in _split(sql) if statement]


def split_steps(sql: str) -> list[Step]:
    """The statements of ``sql``, each with the ``-- unless`` guard written above it.

    Raises ValueError for a malformed guard, two guards on one statement, or
    a guard followed by no statement.
    """
    steps: list[Step] = []
    for statement, comments in _split(sql):
        guards = [Guard.parse(m["guard"]) for c in comments if (m := _GUARD.match(c))]
        if len(guards) > 1:
            raise ValueError(
                f"one guard per statement, found {'; '.join(map(str, guards))}: split the statement"
            )
        if statement:
            steps.append(Step(statement, guards[0] if guards else None))
        elif guards:
            raise ValueError(f"the guard '-- unless {guards[0]}' is followed by no statement")
    return steps


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("me2_scheduler.storage").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match and len(match.group(1)) <= 32:
            found.append(Migration(match.group(1), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


def _applied(cur: pymysql.cursors.Cursor) -> set[str]:
    try:
        cur.execute("SELECT version FROM schema_migrations")
    except pymysql.err.ProgrammingError as exc:
        if exc.args and exc.args[0] == _NO_SUCH_TABLE:
            return set()  # never migrated: a new or a seed-shaped database
        raise
    return {version for (version,) in cur.fetchall()}


def pending_migrations(conf: MysqlConf) -> list[str]:
    """Versions not yet applied to the database, in order; raise StoreError if unreachable."""
    with translated(conf.dsn, "reading the schema version"):
        conn = open_connection(conf)
        try:
            with conn.cursor() as cur:
                done = _applied(cur)
        finally:
            conn.close()
    return [m.version for m in available_migrations() if m.version not in done]


def check_schema(store: MysqlStore) -> None:
    """Raise SchemaBehindError when the store's database lacks a shipped migration.

    Raises StoreError when MySQL is unreachable.
    """
    pending = pending_migrations(store.conf)
    if pending:
        raise SchemaBehindError(
            f"MySQL {where(store.conf.dsn)}: the schema lacks migration(s) "
            f"{', '.join(pending)}; run `me2-scheduler init-db -f <config>`"
        )


def apply_migrations(conf: MysqlConf) -> list[str]:
    """Apply the missing migrations in order and return their versions (idempotent).

    Raises StoreError when MySQL is unreachable, another run holds the lock
    for longer than ``LOCK_TIMEOUT_S``, or a statement fails.
    """
    lock_name = f"me2_scheduler.migrate.{conf.dsn.database}"
    with translated(conf.dsn, "migrating the schema"):
        conn = open_connection(conf, ddl=True)  # an index build may take minutes
        try:
            busy = (
                f"MySQL {where(conf.dsn)}: another migration run held the lock "
                f"for {LOCK_TIMEOUT_S}s; try again when it has finished"
            )
            with conn.cursor() as cur, named_lock(cur, lock_name, LOCK_TIMEOUT_S, busy):
                return _apply_missing(cur, conn, conf)
        finally:
            conn.close()


def run_migration(cur: pymysql.cursors.Cursor, migration: Migration) -> list[Step]:
    """Run the migration's steps whose guard is absent and return them; record nothing.

    Raises StoreError for a malformed guard; driver errors pass through.
    """
    ran = []
    for step in migration.steps():
        if step.unless is not None and step.unless.present(cur):
            continue  # done by an earlier run cut short, or by hand
        cur.execute(step.sql)
        ran.append(step)
    return ran


def _apply_missing(
    cur: pymysql.cursors.Cursor, conn: pymysql.connections.Connection, conf: MysqlConf
) -> list[str]:
    cur.execute(_CREATE_LEDGER)
    done = _applied(cur)
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        with translated(conf.dsn, f"applying migration {migration.version}"):
            run_migration(cur, migration)
        applied_at = to_db(utc_now(), zone(conf.dsn.loc))
        cur.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
            (migration.version, applied_at),
        )
        conn.commit()
        applied.append(migration.version)
    return applied
