"""A Redis that may evict the index's keys is refused at start; one that only might is warned of.

Real Redis servers started with the policy under test (and with CONFIG or
INFO renamed away, as some managed services do); the preflight runs
in-process against them and the session's MariaDB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from me2_devkit.testing.servers import MariaDBServer, RedisServer, temp_root
from me2_scheduler.config import Config, MysqlConf, RedisConf
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.errors import ConfigError
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.supervisor.preflight import EXIT_CONFIG, check_eviction_policy, preflight

LOGGER = "me2_scheduler.preflight"


@pytest.fixture(scope="module")
def start_redis() -> Iterator[Callable[..., RedisServer]]:
    """Start Redis servers with extra arguments; all stopped after the module."""
    started: list[RedisServer] = []

    def start(*args: str) -> RedisServer:
        server = RedisServer(root=temp_root("me2-evict-"), extra_args=args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def lru_redis(start_redis: Callable[..., RedisServer]) -> RedisServer:
    return start_redis("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")


@pytest.fixture
def config_for(mariadb: MariaDBServer, database: str, redis_key: str) -> Callable[..., Config]:
    """The config of a service on this test's (migrated) database and the given Redis."""
    dsn = mariadb.dsn(database)
    mysql = MysqlConf(data_source=dsn, dsn=parse_dsn(dsn))
    apply_migrations(mysql)
    return lambda redis: replace(
        Config(), mysql=mysql, redis=RedisConf(host=redis.address, key=redis_key)
    )


def policy_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]


def test_an_allkeys_lru_redis_stops_the_start_with_one_config_error_line(
    lru_redis: RedisServer, config_for: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert preflight(config_for(lru_redis)) == EXIT_CONFIG
    (line,) = policy_lines(caplog)
    assert line.startswith(f"config error: Redis.Host: {lru_redis.address} has maxmemory-policy")
    assert "allkeys-lru" in line and "noeviction" in line and "\n" not in line
    assert not any("rebuilding" in r.getMessage() for r in caplog.records)  # stopped before


def test_the_policy_is_read_from_info_where_config_is_renamed_away(
    start_redis: Callable[..., RedisServer],
    config_for: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hidden = start_redis("--maxmemory-policy", "allkeys-lfu", "--rename-command", "CONFIG", "")
    assert preflight(config_for(hidden)) == EXIT_CONFIG
    (line,) = policy_lines(caplog)
    assert "allkeys-lfu" in line


def test_a_volatile_policy_is_warned_of_and_the_start_goes_on(
    start_redis: Callable[..., RedisServer],
    config_for: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    volatile = start_redis("--maxmemory-policy", "volatile-lru")
    assert preflight(config_for(volatile)) == 0
    (warning,) = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "volatile-lru" in warning.getMessage()


def test_a_redis_that_hides_its_policy_is_warned_of(
    start_redis: Callable[..., RedisServer], redis_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    mute = start_redis("--rename-command", "CONFIG", "", "--rename-command", "INFO", "")
    with DelayIndex(RedisConf(host=mute.address, key=redis_key)) as index:
        check_eviction_policy(index.client)
    (line,) = policy_lines(caplog)
    assert "does not tell its maxmemory-policy" in line


def test_a_noeviction_redis_passes_silently(
    redis_server: RedisServer, index: DelayIndex, caplog: pytest.LogCaptureFixture
) -> None:
    check_eviction_policy(index.client)  # the test servers run Redis's default
    assert policy_lines(caplog) == []


def test_the_refusal_is_a_config_error_on_redis_host(
    lru_redis: RedisServer, redis_key: str
) -> None:
    refused = pytest.raises(ConfigError)
    with DelayIndex(RedisConf(host=lru_redis.address, key=redis_key)) as index, refused as caught:
        check_eviction_policy(index.client)
    assert caught.value.key == "Redis.Host"
