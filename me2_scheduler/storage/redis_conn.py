"""The Redis client factory: a single node or a cluster, from ``RedisConf``.

Call it in the process that uses the client, after fork (a client's sockets
must never be shared between processes). Responses are decoded to ``str``.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from me2_scheduler.config import RedisConf
from me2_scheduler.errors import ConfigError, RedisIndexError

DEFAULT_PORT = 6379
# Above the longest blocking call (a worker's BLPOP on ready, 1 s), so a
# healthy but idle server is never taken for a dead one.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# A short retry rides over a blip or a failover without stalling the poller for
# seconds (redis-py's default backs off up to 10 s). A script repeated after a
# lost reply never duplicates a dispatch: a repeated ack reports its own applied
# claim as stale, a repeated claim_one sees "in flight" and the lease brings
# the avatar back to due.
RETRIES = 2

RedisClient = redis.Redis | RedisCluster


def parse_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[v6]:port"``, or a bare host for 6379).

    Raises ``ConfigError("Redis.Host", ...)`` when the port is not a number.
    """
    address = address.strip()
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:  # no port, or the colon was inside "[v6]"
        host, port = address, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("Redis.Host", f"expected host:port, got {address!r}")
    return host, int(port)


def parse_addresses(hosts: str) -> list[tuple[str, int]]:
    """Split comma-separated seeds; raise ``ConfigError`` when there is none or one is bad."""
    addresses = [parse_address(part) for part in hosts.split(",") if part.strip()]
    if not addresses:
        raise ConfigError("Redis.Host", "no address given")
    return addresses


def make_redis(conf: RedisConf) -> RedisClient:
    """A client for ``conf``: ``redis.Redis`` for ``Type: node``, ``RedisCluster`` for cluster.

    Raises ``ConfigError`` for a bad ``Host`` or ``Type``, and ``RedisIndexError``
    when no cluster seed answers (a node client connects lazily, on first use).
    """
    common = {
        "password": conf.password or None,
        "decode_responses": True,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), RETRIES),
    }
    if conf.type == "node":
        addresses = parse_addresses(conf.host)
        if len(addresses) > 1:
            raise ConfigError("Redis.Host", "several addresses need Redis.Type: cluster")
        host, port = addresses[0]
        return redis.Redis(host=host, port=port, db=conf.db, **common)
    if conf.type == "cluster":
        nodes = [ClusterNode(host, port) for host, port in parse_addresses(conf.host)]
        try:
            return RedisCluster(startup_nodes=nodes, **common)
        except (RedisError, RedisClusterException) as exc:
            raise RedisIndexError(f"redis cluster {conf.host}: {exc}") from None
    raise ConfigError("Redis.Type", f"must be node or cluster, got {conf.type!r}")
