"""Migration runs cut after any statement, and databases migrated by the earlier texts,
end in the schema the shipped migrations build."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_scheduler.config import Config, RedisConf
from me2_scheduler.storage.migrations import (
    apply_migrations,
    available_migrations,
    pending_migrations,
)
from me2_scheduler.supervisor.preflight import preflight

from .fixtures_migrations import ALL_VERSIONS, OLD_TEXTS, columns, cursor, run_by_hand
from .support import mysql_conf, scratch_database


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
    return {part: mariadb.query(database, sql, (database,)) for part, sql in selects.items()}


@pytest.fixture(scope="module")
def migrated_schema(mariadb: MariaDBServer) -> dict[str, list[tuple]]:
    """The schema the shipped migrations build on an empty database."""
    with scratch_database(mariadb, "ref_") as name:
        apply_migrations(mysql_conf(mariadb, name))
        return schema(mariadb, name)


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
    mariadb.query(
        database,
        "ALTER TABLE avatar_schedules"
        " ADD COLUMN version BIGINT NOT NULL DEFAULT 0 COMMENT 'optimistic concurrency',"
        " ADD INDEX idx_status_avatar_id (status, avatar_id)",
    )
    mariadb.query(
        database,
        "ALTER TABLE avatar_schedules"
        " ADD COLUMN last_error VARCHAR(512) NULL COMMENT 'last dispatch error'",
    )

    assert apply_migrations(mysql_conf(mariadb, database)) == ALL_VERSIONS[1:]

    def without_positions(found: dict[str, list[tuple]]) -> dict[str, object]:
        return {**found, "columns": sorted(row[:2] + row[3:] for row in found["columns"])}

    assert without_positions(schema(mariadb, database)) == without_positions(migrated_schema)
    assert list(columns(mariadb, database, "avatar_schedules"))[-4:] == [
        "version",
        "last_error",
        "last_failed_time",
        "pause_reason",
    ]


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
    mariadb: MariaDBServer,
    database: str,
    redis_server: RedisServer,
    migrated_schema: dict,
    ran: int,
    recorded: int,
) -> None:
    run_by_hand(mariadb, database, ALL_VERSIONS[:ran], texts=OLD_TEXTS, recorded=recorded)
    config = preflight_config(mariadb, database, redis_server)

    assert preflight(config) == 1  # behind: init-db first
    assert apply_migrations(config.mysql) == ALL_VERSIONS[recorded:]
    assert preflight(config) == 0
    assert schema(mariadb, database) == migrated_schema
