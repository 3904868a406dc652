"""Every wait on MySQL and Redis is bounded, and a connection that timed out is never reused.

Real MariaDB and Redis, some behind a ``BlackholeProxy`` (accepts, never
answers); a scratch MariaDB of this module's own is killed -9.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path

import pymysql
import pytest

from me2_devkit.chaos.faultproxy import ThreadedProxy
from me2_devkit.testing.servers import MariaDBServer, RedisServer, temp_root
from me2_scheduler import deadline
from me2_scheduler.config import MysqlConf, RedisConf
from me2_scheduler.dsn import (
    DDL_READ_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_WRITE_TIMEOUT_S,
    parse_dsn,
)
from me2_scheduler.errors import RedisIndexError, StoreError
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.storage.mysql_conn import connect_args, named_lock, reason
from me2_scheduler.storage.redis_conn import HEALTH_CHECK_INTERVAL_S, KEEPALIVE_OPTIONS

from .blackhole import BlackholeProxy, blackhole_proxy
from .fixtures_config import run_cli, write
from .support import serving, wait_until

RECOVERY_S = 30
SILENT = r"no answer from MySQL in time, connection dropped \(2013\)$"


def conf_at(port: int, database: str, params: str = "", pool_size: int = 2) -> MysqlConf:
    """Root on ``127.0.0.1:port``/``database`` with the DSN ``params``."""
    dsn = f"root@tcp(127.0.0.1:{port})/{database}?parseTime=true{params}"
    return MysqlConf(data_source=dsn, dsn=parse_dsn(dsn), pool_size=pool_size)


def connection_id(store: MysqlStore) -> int:
    with store._cursor("reading the connection id") as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return int(cur.fetchone()[0])


@pytest.fixture
def proxied_store(
    mariadb: MariaDBServer, database: str
) -> Iterator[tuple[MysqlStore, BlackholeProxy]]:
    """A migrated store whose MySQL is behind a blackhole proxy (1 s connect and read timeouts)."""
    apply_migrations(conf_at(mariadb.port, database))
    with blackhole_proxy(mariadb.port) as proxy:
        store = MysqlStore(conf_at(proxy.port, database, "&timeout=1s&readTimeout=1s"))
        try:
            yield store, proxy
        finally:
            store.close()


# -- the DSN's timeouts and their defaults ----------------------------------------------------


def test_dsn_timeouts_reach_pymysql_with_safe_defaults_when_absent() -> None:
    timeouts = itemgetter("connect_timeout", "read_timeout", "write_timeout")
    given = connect_args(parse_dsn("u@tcp(db)/me2?timeout=2s&readTimeout=1m&writeTimeout=500ms"))
    assert timeouts(given) == (2.0, 60.0, 0.5)
    absent = connect_args(parse_dsn("u@tcp(db)/me2"))
    assert timeouts(absent) == (5.0, DEFAULT_READ_TIMEOUT_S, DEFAULT_WRITE_TIMEOUT_S)
    assert connect_args(parse_dsn("u@tcp(db)/me2"), ddl=True)["read_timeout"] == DDL_READ_TIMEOUT_S
    assert connect_args(parse_dsn("u@tcp(db)/me2?readTimeout=9s"), ddl=True)["read_timeout"] == 9


@pytest.mark.parametrize(
    ("params", "shown"),
    [
        ("", "timeout 5s, readTimeout 30s, writeTimeout 30s"),
        (
            "?timeout=2s&readTimeout=1m&writeTimeout=500ms",
            "timeout 2s, readTimeout 60s, writeTimeout 0.5s",
        ),
    ],
    ids=["defaults", "from-the-dsn"],
)
def test_check_config_shows_the_three_mysql_timeouts_in_effect(
    tmp_path: Path, params: str, shown: str
) -> None:
    dsn = f"root:Sup3rS3cret@tcp(127.0.0.1:3306)/me2{params}"
    result = run_cli("check-config", "-f", str(write(tmp_path, {"Mysql": {"DataSource": dsn}})))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "DataSource:" in line]
    assert line.endswith(f", {shown}"), line


@pytest.mark.parametrize("param", ["readTimeout=30", "writeTimeout=0", "timeout=fast"])
def test_a_bad_dsn_timeout_exits_2_with_one_config_error_line(tmp_path: Path, param: str) -> None:
    dsn = f"root:Sup3rS3cret@tcp(127.0.0.1:3306)/me2?{param}"
    result = run_cli("check-config", "-f", str(write(tmp_path, {"Mysql": {"DataSource": dsn}})))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"config error: Mysql.DataSource: invalid DSN: {param[:5]}")
    assert result.stderr.count("\n") == 1
    assert "Sup3rS3cret" not in result.stderr and "Traceback" not in result.stderr


# -- MySQL --------------------------------------------------------------------------------


def test_a_statement_past_read_timeout_fails_and_its_connection_is_not_reused(
    mariadb: MariaDBServer, database: str
) -> None:
    store = MysqlStore(conf_at(mariadb.port, database, "&readTimeout=1s", pool_size=1))
    try:
        first = connection_id(store)
        failing = pytest.raises(StoreError, match=f"sleeping failed: {SILENT}")
        with failing, store._cursor("sleeping") as cur:
            cur.execute("SELECT SLEEP(5)")
        assert connection_id(store) != first  # the pool of one opened a new connection
        with store._cursor("sleeping briefly") as cur:  # shorter than the timeout: fine
            cur.execute("SELECT SLEEP(0.2)")
    finally:
        store.close()


def test_a_lock_wait_longer_than_read_timeout_gets_the_servers_answer(
    mariadb: MariaDBServer, database: str
) -> None:
    holder = pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root")
    store = MysqlStore(conf_at(mariadb.port, database, "&readTimeout=1s"))
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK('me2-test-lock', 0)")
        busy = pytest.raises(StoreError, match=r"^lock busy$")
        with (
            busy,
            store._cursor("locking") as cur,
            named_lock(cur, "me2-test-lock", 2, "lock busy"),
        ):
            pass  # GET_LOCK answers 0 after 2 s, past the 1 s read timeout
    finally:
        holder.close()
        store.close()


def test_a_silent_mysql_fails_each_use_in_time_and_the_pool_recovers(
    proxied_store: tuple[MysqlStore, BlackholeProxy],
) -> None:
    store, proxy = proxied_store
    store.create(7, store.server_time())
    before = connection_id(store)
    proxy.blackhole()
    for _ in range(3):  # more failures than the pool holds: no connection slot leaks
        with pytest.raises(StoreError, match=f"reading a schedule failed: {SILENT}"):
            store.get(7)
    proxy.heal()
    wait_until(lambda: store.get(7), RECOVERY_S, "the store to read again after the blackhole")
    assert connection_id(store) != before


def test_a_statement_cut_off_mid_transaction_is_not_committed_and_not_reused(
    proxied_store: tuple[MysqlStore, BlackholeProxy],
) -> None:
    store, proxy = proxied_store
    before = connection_id(store)
    failing = pytest.raises(StoreError, match=f"writing failed: {SILENT}")
    with failing, store._cursor("writing", write=True) as cur:
        cur.execute(
            "INSERT INTO avatar_schedules (avatar_id, status, next_schedule_time)"
            " VALUES (8, 'active', NOW())"
        )
        proxy.blackhole()
        cur.execute("SELECT 1")
    proxy.heal()
    assert wait_until(lambda: connection_id(store), RECOVERY_S, "a new connection") != before
    assert store.get(8) is None


def test_io_ends_by_the_calls_deadline_with_a_sentence_saying_so(
    proxied_store: tuple[MysqlStore, BlackholeProxy],
) -> None:
    store, proxy = proxied_store
    store.get(9)  # one pooled connection, pinged when next taken
    proxy.blackhole()
    with deadline.within(0.3), pytest.raises(StoreError) as caught:
        store.get(9)
    assert str(caught.value).endswith(
        "reading a schedule failed: the call's deadline passed before MySQL answered"
    )


def test_a_blackhole_as_the_mysql_address_fails_connecting_in_time() -> None:
    with blackhole_proxy(None) as hole:
        store = MysqlStore(conf_at(hole.port, "nowhere", "&timeout=500ms"))
        with pytest.raises(StoreError, match=rf"^MySQL 127.0.0.1:\d+/\w+: ping failed: {SILENT}"):
            store.ping()
        assert hole.accepted == 1


@pytest.fixture(scope="module")
def scratch_mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB of this module's own, to kill."""
    yield from serving(MariaDBServer(root=temp_root("me2-crash-")))


def test_a_crashed_mariadb_gives_an_error_that_says_what_happened(
    scratch_mariadb: MariaDBServer,
) -> None:
    scratch_mariadb.create_database("crash")
    conf = conf_at(scratch_mariadb.port, "crash")
    apply_migrations(conf)
    store = MysqlStore(conf)
    try:
        store.create(11, store.server_time())  # pooled connections, idle when the server dies
        scratch_mariadb.kill()
        for _ in range(2):
            with pytest.raises(StoreError) as caught:
                store.get(11)
            message = str(caught.value)
            assert "(0)" not in message and not message.endswith(": ")
            assert "Can't connect to MySQL server" in message, message
        scratch_mariadb.start()
        row = wait_until(lambda: store.get(11), RECOVERY_S, "a read once MariaDB is back")
        assert row.avatar_id == 11
    finally:
        store.close()


def test_an_empty_driver_error_still_reads_as_a_sentence() -> None:
    lost = reason(pymysql.err.InterfaceError(0, ""))
    assert lost.startswith("connection lost: ") and "(0)" not in lost
    assert reason(pymysql.err.OperationalError(2013, "Lost connection")) == "Lost connection (2013)"


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture
def proxied_index(
    redis_server: RedisServer, redis_key: str
) -> Iterator[tuple[DelayIndex, BlackholeProxy]]:
    with blackhole_proxy(redis_server.port) as proxy:
        index = DelayIndex(RedisConf(host=proxy.address, key=redis_key))
        try:
            yield index, proxy
        finally:
            index.close()


def test_redis_sockets_have_keepalive_and_idle_connections_are_checked(
    proxied_index: tuple[DelayIndex, BlackholeProxy],
) -> None:
    index, _ = proxied_index
    index.client.ping()
    (conn,) = index.client.connection_pool._available_connections
    sock = conn._sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert KEEPALIVE_OPTIONS  # Linux: idle, interval and count
    for option, value in KEEPALIVE_OPTIONS.items():
        assert sock.getsockopt(socket.IPPROTO_TCP, option) == value
    assert conn.health_check_interval == HEALTH_CHECK_INTERVAL_S


def test_a_silent_redis_fails_by_the_deadline_and_its_connection_is_dropped(
    proxied_index: tuple[DelayIndex, BlackholeProxy],
) -> None:
    index, proxy = proxied_index
    before = index.client.client_id()
    proxy.blackhole()
    with deadline.within(0.5), pytest.raises(RedisIndexError) as caught:
        index.has_meta()
    assert f"before Redis 127.0.0.1:{proxy.port} answered" in str(caught.value)
    pool = index.client.connection_pool
    assert all(conn._sock is None for conn in pool._available_connections)
    proxy.heal()
    assert wait_until(index.client.client_id, RECOVERY_S, "Redis to answer again") != before


def test_a_use_timeout_ends_a_use_on_a_silent_mysql_however_long_its_read_timeout(
    mariadb: MariaDBServer, database: str
) -> None:
    """A worker's or the poller's store gives up on a connection gone silent mid-use
    after its use timeout (the lease), not after an hour-long read timeout."""
    apply_migrations(conf_at(mariadb.port, database))
    with blackhole_proxy(mariadb.port) as proxy:
        conf = conf_at(proxy.port, database, "&readTimeout=3600s")
        store = MysqlStore(conf, use_timeout_s=0.5)
        try:
            store.get(10)  # a pooled connection, to go silent under the next use
            proxy.blackhole()
            failed: list[BaseException] = []

            def use() -> None:
                try:
                    store.get(10)
                except StoreError as exc:
                    failed.append(exc)

            worker = threading.Thread(target=use, daemon=True)
            worker.start()
            worker.join(RECOVERY_S)
            assert not worker.is_alive(), "a use outlived its use timeout by far"
            assert len(failed) == 1
            assert str(failed[0]).endswith("the call's deadline passed before MySQL answered")
        finally:
            proxy.heal()
            store.close()


def test_a_reply_in_many_packets_gets_only_what_is_left_of_the_deadline(
    mariadb: MariaDBServer,
) -> None:
    """Each packet of a handshake waits only what is left of the deadline: through a
    proxy holding every chunk 300 ms, a connection that cannot be set up within 1 s
    fails on a read timed out by the deadline, not after its last packet arrived."""
    proxy = ThreadedProxy(f"127.0.0.1:{mariadb.port}").start()
    try:
        proxy.set_phase("latency", delay_ms=300)
        store = MysqlStore(conf_at(int(proxy.address.rsplit(":", 1)[1]), "mysql", "&timeout=10s"))
        with deadline.within(1.0), pytest.raises(StoreError) as caught:
            store.ping()
        assert re.search(f"ping failed: {SILENT}", str(caught.value))  # not "deadline passed"
    finally:
        proxy.stop()
