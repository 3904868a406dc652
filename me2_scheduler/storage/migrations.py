"""Versioned schema migrations: ``storage/migrations/NNN_name.sql``, applied in order.

The version of a migration is its file name without ``.sql`` (``001_seed``);
``schema_migrations`` records those applied. MySQL commits DDL as it goes, so
a migration cannot be rolled back half-way: every statement in the files is
written to be re-runnable (``IF NOT EXISTS``), and a migration is recorded
only after all its statements ran. An existing seed-shaped database (the Go
original's table, no ``schema_migrations``) is therefore upgraded in place:
``001_seed`` finds its table and changes nothing, the later ones add to it.
Concurrent runs are serialised with ``GET_LOCK``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING

import pymysql

from me2_scheduler.config import MysqlConf
from me2_scheduler.errors import SchemaBehindError, StoreError
from me2_scheduler.storage.mysql_conn import open_connection, translated, where, zone
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


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the file stem) and SQL text."""

    version: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, comments removed."""
        return split_statements(self.sql)


def split_statements(sql: str) -> list[str]:
    """Split SQL text on ``;`` outside strings, quoted names and comments."""
    statements: list[str] = []
    current: list[str] = []
    for token in _TOKEN.finditer(sql):
        if token.group("comment"):
            continue
        if token.group("end"):
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(token.group(0))
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("me2_scheduler.storage").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match and len(match.group(1)) <= 32:
            found.append(Migration(match.group(1), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


def latest_version() -> str:
    """The version the shipped migrations bring a database to."""
    return available_migrations()[-1].version


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


def schema_status(conf: MysqlConf) -> tuple[str | None, str]:
    """``(current, latest)``: the newest applied version (None: none) and the shipped one.

    Raises StoreError when MySQL is unreachable.
    """
    pending = set(pending_migrations(conf))
    applied = [m.version for m in available_migrations() if m.version not in pending]
    return (applied[-1] if applied else None), latest_version()


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
    lock_name = f"me2_scheduler.migrate.{conf.dsn.database}"[:64]
    with translated(conf.dsn, "migrating the schema"):
        conn = open_connection(conf)
        try:
            with conn.cursor() as cur:
                _lock(cur, conf, lock_name)
                try:
                    return _apply_missing(cur, conn, conf)
                finally:
                    cur.execute("SELECT RELEASE_LOCK(%s)", (lock_name,))
        finally:
            conn.close()


def _lock(cur: pymysql.cursors.Cursor, conf: MysqlConf, name: str) -> None:
    cur.execute("SELECT GET_LOCK(%s, %s)", (name, LOCK_TIMEOUT_S))
    (got,) = cur.fetchone()
    if got != 1:
        raise StoreError(
            f"MySQL {where(conf.dsn)}: another migration run held the lock "
            f"for {LOCK_TIMEOUT_S}s; try again when it has finished"
        )


def _apply_missing(
    cur: pymysql.cursors.Cursor, conn: pymysql.connections.Connection, conf: MysqlConf
) -> list[str]:
    cur.execute(_CREATE_LEDGER)
    done = _applied(cur)
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements():
            cur.execute(statement)
        applied_at = to_db(datetime.now(timezone.utc), zone(conf.dsn.loc))
        cur.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
            (migration.version, applied_at),
        )
        conn.commit()
        applied.append(migration.version)
    return applied
