"""Shared fixtures: one real MariaDB and one real Redis per test session.

Each test gets its own database and its own Redis key prefix, so tests never
see each other's data. A missing server binary fails the session under CI
(it never skips), and is reported with the package to install.

What the tests of one subject share (the RPC server, the store, the diary,
etcd, ...) is in ``fixtures_<subject>.py``, loaded below; plain helpers
(``wait_until``, config writers) are in ``support.py``. No test module
imports from another.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from me2_devkit.simulators import ActionSimulator, RunningSimulator, serve
from me2_devkit.testing.servers import MariaDBServer, RedisServer, temp_root
from me2_scheduler.config import Config, MysqlConf, RedisConf, RpcClientConf, ScheduleConf
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations

from .support import scratch_database, serving

# Fixtures shared by several test modules, one module per subject.
pytest_plugins = [
    "tests.fixtures_diary",
    "tests.fixtures_dispatch",
    "tests.fixtures_etcd",
    "tests.fixtures_index",
    "tests.fixtures_metrics",
    "tests.fixtures_migrations",
    "tests.fixtures_ops",
    "tests.fixtures_rpc",
    "tests.fixtures_service",
    "tests.fixtures_store",
]
# Their asserts read as the tests' do, whichever module imports them first.
pytest.register_assert_rewrite(*pytest_plugins)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB server for the whole session (root, no password, loopback)."""
    yield from serving(MariaDBServer(root=temp_root("me2-mariadb-")))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the whole session, without persistence."""
    yield from serving(RedisServer(root=temp_root("me2-redis-")))


@pytest.fixture
def database(mariadb: MariaDBServer) -> Iterator[str]:
    """A fresh, empty database name for one test; dropped afterwards."""
    with scratch_database(mariadb) as name:
        yield name


@pytest.fixture
def redis_key() -> str:
    """A unique ``Redis.Key`` for one test, so its keys never meet another test's."""
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_conf(redis_server: RedisServer, redis_key: str) -> RedisConf:
    """The ``Redis`` settings of this test's server and key."""
    return RedisConf(host=redis_server.address, key=redis_key)


@pytest.fixture
def index(redis_conf: RedisConf) -> Iterator[DelayIndex]:
    """The delay index under this test's Redis key."""
    with DelayIndex(redis_conf) as made:
        yield made


@pytest.fixture
def action_simulator() -> Iterator[RunningSimulator]:
    """An Action simulator in this process on a free port, answering at once."""
    running = serve(ActionSimulator(seed=7), "127.0.0.1:0")
    try:
        yield running
    finally:
        running.stop(grace=0)


@pytest.fixture
def dispatch_config(
    mariadb: MariaDBServer, database: str, redis_conf: RedisConf
) -> Callable[..., Config]:
    """Makes the ``Config`` of a dispatcher on this test's database and Redis key,
    calling the Action simulator at ``action`` (schema migrated)."""

    def make(action: str, *, schedule: ScheduleConf | None = None) -> Config:
        dsn = mariadb.dsn(database)
        made = replace(
            Config(),
            mysql=MysqlConf(data_source=dsn, dsn=parse_dsn(dsn)),
            redis=redis_conf,
            action_rpc=RpcClientConf(endpoints=(action,), timeout_ms=5000),
            schedule=schedule or ScheduleConf(),
        )
        apply_migrations(made.mysql)
        return made

    return make
