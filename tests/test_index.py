"""The delay index's keys, scripts, client factory, upkeep and rebuild (DESIGN §2.2)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import fakeredis
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from me2_devkit.testing.servers import RedisServer, free_port, temp_root
from me2_scheduler.chunking import chunks
from me2_scheduler.config import RedisConf
from me2_scheduler.errors import ConfigError, RedisIndexError
from me2_scheduler.storage.claim import Claim, parse_planned
from me2_scheduler.storage.index import INDEX_VERSION, SCRIPT_CHUNK, DelayIndex
from me2_scheduler.storage.keys import Keys
from me2_scheduler.storage.redis_conn import make_redis, parse_address
from me2_scheduler.storage.scripts import script_sources

from .fixtures_index import due_members
from .support import wait_until

# -- keys ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["me2:scheduler", "test:abc", "a"])
def test_all_keys_hash_to_one_cluster_slot(key: str) -> None:
    keys = Keys(key)

    assert len({key_slot(name.encode()) for name in keys.all()}) == 1
    assert all(name.startswith("{" + key + "}:") for name in keys.all())


def test_keys_are_built_from_the_configured_redis_key() -> None:
    keys = Keys.from_conf(RedisConf(key="me2:scheduler"))

    assert (keys.due, keys.inflight, keys.leases, keys.ready, keys.meta) == (
        "{me2:scheduler}:due",
        "{me2:scheduler}:inflight",
        "{me2:scheduler}:leases",
        "{me2:scheduler}:ready",
        "{me2:scheduler}:meta",
    )
    assert keys.rebuild_run("r1") == "{me2:scheduler}:due:rebuild:r1"


@pytest.mark.parametrize("key", ["", "a{b", "a}b"])
def test_a_key_that_would_split_the_hash_slot_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Keys(key)
    assert raised.value.key == "Redis.Key"


# -- scripts ---------------------------------------------------------------

SCRIPTS = sorted(script_sources().items())


def split_script(source: str) -> tuple[str, str]:
    header = "\n".join(line for line in source.splitlines() if line.startswith("--"))
    body = "\n".join(line for line in source.splitlines() if not line.startswith("--"))
    return header, body


@pytest.mark.parametrize(("name", "source"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_every_script_has_a_header_naming_each_key_and_argument_it_uses(
    name: str, source: str
) -> None:
    header, body = split_script(source)

    assert source.startswith(f"-- {name}.lua: ")
    used = set(re.findall(r"(?:KEYS|ARGV)\[\d+\]", body))
    assert used <= set(re.findall(r"(?:KEYS|ARGV)\[\d+\]", header))
    assert "KEYS[1]" in header and "ARGV" in header
    assert re.search(r"^-- Returns", header, re.MULTILINE)


@pytest.mark.parametrize(("name", "source"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_no_script_builds_a_key_name_or_scans_keys(name: str, source: str) -> None:
    _, body = split_script(source)

    assert "'KEYS'" not in body and '"KEYS"' not in body
    assert not re.search(r":(due|inflight|leases|ready|meta)\b", body)


OPERATIONS = ("claim_due", "pickup", "ack", "release_expired", "claim_one")
UPKEEP = ("put_due", "remove", "sizes", "absent", "swap_rebuild")


def test_the_index_loads_every_operation_script() -> None:
    assert set(script_sources()) >= {*OPERATIONS, *UPKEEP}


# -- client factory ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6380", ("127.0.0.1", 6380)),
        ("redis.local", ("redis.local", 6379)),
        (" host:1 ", ("host", 1)),
        ("[::1]:7000", ("::1", 7000)),
        ("[::1]", ("::1", 6379)),
    ],
)
def test_addresses_are_parsed_as_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["host:port", "host:70000", ":6379", "host:0"])
def test_a_bad_address_is_a_config_error_on_redis_host(address: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_address(address)
    assert raised.value.key == "Redis.Host"


def test_a_node_client_talks_to_the_configured_server_and_db(redis_server: RedisServer) -> None:
    client = make_redis(RedisConf(host=redis_server.address, db=3))
    try:
        client.set("probe", "1")
        assert client.get("probe") == "1"  # decoded to str
        assert client.connection_pool.connection_kwargs["db"] == 3
        client.delete("probe")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("conf", "key"),
    [
        (RedisConf(type="sentinel"), "Redis.Type"),
        (RedisConf(host="a:1,b:2", type="node"), "Redis.Host"),
        (RedisConf(host=" , "), "Redis.Host"),
    ],
)
def test_a_bad_redis_config_is_a_config_error(conf: RedisConf, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_redis(conf)
    assert raised.value.key == key


def test_an_unreachable_redis_raises_redis_index_error() -> None:
    with DelayIndex(RedisConf(host=f"127.0.0.1:{free_port()}", key="x")) as index:
        with pytest.raises(RedisIndexError):
            index.ping()
        with pytest.raises(RedisIndexError):
            index.claim_due(batch=1, lease_s=1)


def test_an_unreachable_cluster_raises_redis_index_error() -> None:
    with pytest.raises(RedisIndexError):
        make_redis(RedisConf(host=f"127.0.0.1:{free_port()}", type="cluster"))


@pytest.fixture(scope="module")
def cluster_server() -> Iterator[RedisServer]:
    """A one-node Redis Cluster owning every slot: enough to exercise the cluster client."""
    cluster_args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    server = RedisServer(
        root=temp_root("me2-redis-cluster-"),
        extra_args=(*cluster_args, "--cluster-port", str(free_port())),
    ).start()
    try:
        admin = redis.Redis(port=server.port, decode_responses=True)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_until(
            lambda: admin.cluster("info")["cluster_state"] == "ok",
            30,
            "the one-node cluster to become ok",
        )
        admin.close()
        yield server
    finally:
        server.stop()


def test_every_script_runs_on_a_redis_cluster(cluster_server: RedisServer, redis_key: str) -> None:
    conf = RedisConf(host=cluster_server.address, type="cluster", key=redis_key)
    with DelayIndex(conf) as index:
        assert isinstance(index.client, RedisCluster)
        now = int(index.now())
        assert index.rebuild([(1, now - 5), (2, now + 500)], chunk=1) == 2
        assert index.claim_due(batch=5, lease_s=0) == 1
        [claim] = index.pop_ready_many(1, timeout_s=0.1).claims
        assert index.renew_leases([claim], lease_s=0) == [True]
        assert index.release_expired() == [1]
        assert index.ack(claim, next_due=now) is False
        assert index.claim_one(2, lease_s=60) is not None
        assert index.absent([1, 2, 3]) == [3]
        assert index.sizes() == {"due": 1, "overdue": 1, "inflight": 1, "ready": 0}
        assert index.remove(2) is True
        assert index.put_due(2, now) is True


def test_an_injected_fakeredis_client_runs_the_same_scripts() -> None:
    index = DelayIndex(RedisConf(key="unit"), client=fakeredis.FakeRedis(decode_responses=True))
    now = int(index.now())
    index.put_due_many([(1, now - 10), (2, now + 100)])

    assert index.claim_due(batch=5, lease_s=30) == 1
    [claim] = index.pop_ready_many(1, timeout_s=0).claims
    assert claim == Claim(1, now - 10, claim.token)
    assert index.renew_leases([claim], lease_s=30) == [True]
    assert index.ack(claim, next_due=now + 50) is True
    assert index.next_due(5) == [(1, now + 50), (2, now + 100)]


def test_a_claim_reads_back_from_its_ready_entry() -> None:
    claim = Claim.parse("42:1700000000:abc-1")

    assert claim == Claim(42, 1_700_000_000, "abc-1")
    assert claim.idempotency_key == "42:1700000000000"
    with pytest.raises(ValueError):
        Claim.parse("42:abc")


@pytest.mark.parametrize(
    ("text", "planned"), [("1700000000", 1_700_000_000), ("1700000000.123", 1_700_000_000.123)]
)
def test_a_planned_time_is_whole_seconds_or_seconds_with_milliseconds(
    text: str, planned: float
) -> None:
    assert parse_planned(text) == planned
    assert isinstance(parse_planned(text), type(planned))


@pytest.mark.parametrize("text", ["", "abc", "1700000000:1"])
def test_a_planned_time_that_is_no_number_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_planned(text)


def test_chunks_cut_a_stream_into_bounded_lists_in_order() -> None:
    assert list(chunks(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []
    with pytest.raises(ValueError):
        next(chunks([1], 0))


# -- upkeep: put_due, remove, absent, sizes ------------------------------


def test_put_due_adds_an_avatar_and_moves_its_due_time(index: DelayIndex) -> None:
    assert index.put_due(1, 1_800_000_000) is True
    assert index.put_due(1, 1_800_000_600) is True

    assert due_members(index) == {1: 1_800_000_600}


def test_put_due_never_adds_an_avatar_in_flight_to_due(index: DelayIndex) -> None:
    index.claim_one(1, lease_s=600)

    assert index.put_due(1, 1_800_000_000) is False
    assert index.put_due_many([(1, 1_800_000_000), (2, 1_800_000_000)]) == 1

    assert due_members(index) == {2: 1_800_000_000}
    assert index.is_inflight(1)


def test_put_due_only_if_absent_never_moves_a_member_already_due(index: DelayIndex) -> None:
    index.put_due(1, 1_800_000_000)
    index.claim_one(3, lease_s=600)

    assert index.put_due(1, 1_700_000_000, only_if_absent=True) is False
    assert index.put_due_many([(2, 1_700_000_000), (3, 1_700_000_000)], only_if_absent=True) == 1

    assert due_members(index) == {1: 1_800_000_000, 2: 1_700_000_000}


def test_put_due_many_writes_more_pairs_than_one_script_call_takes(index: DelayIndex) -> None:
    pairs = [(avatar_id, 1_800_000_000 + avatar_id) for avatar_id in range(SCRIPT_CHUNK * 2 + 7)]

    assert index.put_due_many(iter(pairs)) == len(pairs)

    assert due_members(index) == dict(pairs)


def test_remove_takes_an_avatar_out_of_due(index: DelayIndex) -> None:
    index.put_due_many([(1, 1_800_000_000), (2, 1_800_000_000)])

    assert index.remove(1) is True
    assert index.remove(1) is False

    assert due_members(index) == {2: 1_800_000_000}


def test_absent_lists_the_avatars_in_neither_due_nor_inflight(index: DelayIndex) -> None:
    index.put_due_many((avatar_id, 1_800_000_000) for avatar_id in range(0, 2500, 2))
    index.claim_one(1, lease_s=600)
    expected = [avatar_id for avatar_id in range(3, 2500, 2)]

    assert index.absent(range(2500)) == expected
    assert index.absent([]) == []


def test_sizes_count_overdue_members_beyond_the_grace(index: DelayIndex) -> None:
    now = int(index.now())
    index.put_due_many([(1, now - 100), (2, now - 10), (3, now + 100)])
    index.claim_one(4, lease_s=600)

    assert index.sizes(grace_s=50) == {"due": 3, "overdue": 1, "inflight": 1, "ready": 0}
    assert index.sizes() == {"due": 3, "overdue": 2, "inflight": 1, "ready": 0}


def test_next_due_lists_the_earliest_members_first(index: DelayIndex) -> None:
    index.put_due_many([(1, 1_800_000_300), (2, 1_800_000_100), (3, 1_800_000_200)])

    assert index.next_due(2) == [(2, 1_800_000_100), (3, 1_800_000_200)]
    assert index.next_due(0) == []


# -- rebuild ---------------------------------------------------------------


def test_rebuild_of_100000_rows_gives_exactly_the_input_set_and_scores(index: DelayIndex) -> None:
    rows = [(avatar_id, 1_800_000_000 + avatar_id % 86_400) for avatar_id in range(1, 100_001)]

    assert index.rebuild(iter(rows)) == 100_000

    assert due_members(index) == dict(rows)
    meta = index.client.hgetall(index.keys.meta)
    assert meta["version"] == str(INDEX_VERSION) and meta["rows"] == "100000"
    assert int(meta["built_at"]) <= index.now()


def test_rebuild_replaces_a_stale_due_set(index: DelayIndex) -> None:
    index.put_due_many([(1, 1_700_000_000), (900, 1_700_000_000), (901, 1_700_000_000)])

    index.rebuild([(1, 1_800_000_000), (2, 1_800_000_100)])

    assert due_members(index) == {1: 1_800_000_000, 2: 1_800_000_100}


def test_rebuild_never_leaves_an_avatar_in_both_due_and_inflight(index: DelayIndex) -> None:
    for avatar_id in range(1, 6):
        index.claim_one(avatar_id, lease_s=600)

    index.rebuild((avatar_id, 1_800_000_000) for avatar_id in range(1, 11))

    assert set(due_members(index)) == set(range(6, 11))
    inflight = {int(m) for m in index.client.zrange(index.keys.inflight, 0, -1)}
    assert inflight == set(range(1, 6))


def test_readers_see_the_old_due_set_until_the_rebuild_is_swapped_in(index: DelayIndex) -> None:
    index.put_due_many([(1, 1_700_000_000), (2, 1_700_000_000)])
    seen: list[tuple[int, dict[int, float]]] = []

    index.rebuild(
        ((avatar_id, 1_800_000_000) for avatar_id in range(10, 35)),
        chunk=10,
        progress=lambda done: seen.append((done, due_members(index))),
    )

    assert seen == [(count, {1: 1_700_000_000, 2: 1_700_000_000}) for count in (10, 10, 5)]
    assert set(due_members(index)) == set(range(10, 35))


def test_rebuild_leaves_no_temporary_key_behind(index: DelayIndex) -> None:
    index.rebuild((avatar_id, 1_800_000_000) for avatar_id in range(50))

    assert list(index.client.scan_iter(match=index.keys.due_rebuild + "*")) == []
    assert index.client.ttl(index.keys.due) == -1  # the swapped-in set does not expire


def test_rebuild_of_zero_rows_empties_due_and_still_writes_meta(index: DelayIndex) -> None:
    index.put_due(1, 1_800_000_000)

    assert index.rebuild([]) == 0

    assert index.client.exists(index.keys.due) == 0
    assert index.has_meta()
    assert index.client.hget(index.keys.meta, "rows") == "0"


def test_meta_marks_whether_the_index_was_built(index: DelayIndex) -> None:
    assert not index.has_meta()
    index.rebuild([(1, 1_800_000_000)])
    assert index.has_meta()

    index.client.delete(index.keys.meta)

    assert not index.has_meta()
    assert due_members(index) == {1: 1_800_000_000}
