"""Shared fixtures: one real MariaDB and one real Redis per test session.

Each test gets its own database and its own Redis key prefix, so tests never
see each other's data. A missing server binary fails the session under CI
(it never skips), and is reported with the package to install.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from me2_devkit.testing.servers import MariaDBServer, RedisServer, temp_root
from me2_scheduler.config import Config, MysqlConf, RedisConf, RpcClientConf, ScheduleConf
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.storage.migrations import apply_migrations

_db_seq = itertools.count(1)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB server for the whole session (root, no password, loopback)."""
    server = MariaDBServer(root=temp_root("me2-mariadb-")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the whole session, without persistence."""
    server = RedisServer(root=temp_root("me2-redis-")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(mariadb: MariaDBServer) -> Iterator[str]:
    """A fresh, empty database name for one test; dropped afterwards."""
    name = f"t{os.getpid()}_{next(_db_seq)}"
    mariadb.create_database(name)
    try:
        yield name
    finally:
        mariadb.drop_database(name)


@pytest.fixture
def redis_key() -> str:
    """A unique ``Redis.Key`` for one test, so its keys never meet another test's."""
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def dispatch_config(mariadb: MariaDBServer, database: str, redis_server: RedisServer,
                    redis_key: str) -> Callable[..., Config]:  # fmt: skip
    """Makes the ``Config`` of a dispatcher on this test's database and Redis key,
    calling the Action simulator at ``action`` (schema migrated)."""

    def make(action: str, *, schedule: ScheduleConf | None = None) -> Config:
        dsn = mariadb.dsn(database)
        made = replace(
            Config(),
            mysql=MysqlConf(data_source=dsn, dsn=parse_dsn(dsn)),
            redis=RedisConf(host=redis_server.address, key=redis_key),
            action_rpc=RpcClientConf(endpoints=(action,), timeout_ms=5000),
            schedule=schedule or ScheduleConf(),
        )
        apply_migrations(made.mysql)
        return made

    return make
