"""The Redis client factory: a single node or a cluster, from ``RedisConf``.

Call it in the process that uses the client, after fork (a client's sockets
must never be shared between processes). Responses are decoded to ``str``.

Every wait is bounded: connect and socket timeouts, TCP keepalive on every
socket, a PING before using a connection left idle, and the deadline of the
call in progress (``me2_scheduler.deadline``) on top of all of them. redis-py
disconnects a connection whose read or write failed or timed out (a reply may
still be on its way), so such a connection is never used again.
"""

from __future__ import annotations

import socket
from typing import Any

import redis
from redis.backoff import AbstractBackoff, ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from me2_scheduler import deadline
from me2_scheduler.config import RedisConf
from me2_scheduler.errors import ConfigError, RedisIndexError

DEFAULT_PORT = 6379
# Above the longest wait of a healthy server: a worker's BLPOP on ready (1 s)
# and a Lua script over one chunk (milliseconds; Redis answers BUSY to others
# past lua-time-limit, 5 s), so a healthy but busy server is never taken for
# a dead one, while a silent one is given up within seconds.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# TCP keepalive on every socket: after 30 s idle, a probe every 10 s, 3 lost
# probes close it, so a connection to a vanished peer dies within ~60 s even
# if nothing is sent on it (an RPC server's between calls).
KEEPALIVE_OPTIONS = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)  # Linux has all three; others keep their system defaults
}
# A connection idle longer than this is PINGed before its next command, so a
# connection broken while idle (a Redis restart, a NAT that forgot the flow)
# costs a reconnect, never a failed command.
HEALTH_CHECK_INTERVAL_S = 30
# A short retry rides over a blip or a failover without stalling the poller for
# seconds (redis-py's default backs off up to 10 s). A script repeated after a
# lost reply never duplicates a dispatch: a repeated ack reports its own applied
# claim as stale, a repeated claim_one sees "in flight" and the lease brings
# the avatar back to due.
RETRIES = 2

RedisClient = redis.Redis | RedisCluster


class DeadlinePassed(RedisError):
    """The call's deadline passed before Redis answered (never retried)."""


class DeadlineConnection(redis.Connection):
    """A redis-py connection whose connect and reads also end by the deadline of the
    call in progress; without a deadline it is a plain ``redis.Connection``.

    A read cut by the deadline is a timeout: redis-py disconnects the connection.
    """

    def _connect(self) -> Any:
        configured = self.socket_connect_timeout
        self.socket_connect_timeout = deadline.cut(configured)
        try:
            return super()._connect()
        finally:
            self.socket_connect_timeout = configured

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if deadline.passed():  # nothing sent: the connection stays usable
            raise DeadlinePassed(
                f"the call's deadline passed before Redis {self.host}:{self.port} answered"
            )
        super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        sock = self._sock
        if sock is None or deadline.remaining() is None:
            return super().read_response(*args, **kwargs)
        sock.settimeout(deadline.cut(self.socket_timeout))
        try:
            return super().read_response(*args, **kwargs)
        finally:
            if self._sock is sock:  # still connected: back to the configured timeout
                sock.settimeout(self.socket_timeout)


class DeadlineBackoff(AbstractBackoff):
    """Exponential backoff (0.2 s, 0.4 s ... capped at 1 s) that never sleeps past the deadline."""

    def __init__(self) -> None:
        self._backoff = ExponentialBackoff(cap=1.0, base=0.1)

    def reset(self) -> None:
        self._backoff.reset()

    def compute(self, failures: int) -> float:
        wait = self._backoff.compute(failures)
        left = deadline.remaining()
        return wait if left is None else max(0.0, min(wait, left))


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
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE_OPTIONS,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "connection_class": DeadlineConnection,
        "retry": Retry(DeadlineBackoff(), RETRIES),
    }
    if conf.type == "node":
        addresses = parse_addresses(conf.host)
        if len(addresses) > 1:
            raise ConfigError("Redis.Host", "several addresses need Redis.Type: cluster")
        host, port = addresses[0]
        # The pool takes the connection class (redis.Redis does not); from_pool
        # lets the client close it.
        pool = redis.ConnectionPool(host=host, port=port, db=conf.db, **common)
        return redis.Redis.from_pool(pool)
    if conf.type == "cluster":
        nodes = [ClusterNode(host, port) for host, port in parse_addresses(conf.host)]
        try:
            return RedisCluster(startup_nodes=nodes, **common)
        except (RedisError, RedisClusterException) as exc:
            raise RedisIndexError(f"redis cluster {conf.host}: {exc}") from None
    raise ConfigError("Redis.Type", f"must be node or cluster, got {conf.type!r}")


def eviction_policies(client: RedisClient) -> dict[str, str | None]:
    """Each server's ``maxmemory-policy`` by address (of a cluster, every primary's).

    ``CONFIG GET``, or where CONFIG is renamed, disabled or denied, ``INFO
    memory``; None when neither answers it. Raises redis-py errors when a
    server is unreachable.
    """
    if isinstance(client, RedisCluster):
        return {
            node.name: _eviction_policy(node.redis_connection) for node in client.get_primaries()
        }
    kwargs = client.connection_pool.connection_kwargs
    return {f"{kwargs.get('host')}:{kwargs.get('port')}": _eviction_policy(client)}


def _eviction_policy(client: redis.Redis) -> str | None:
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        if policy:
            return str(policy)
    except ResponseError:  # unknown command (renamed or disabled) or NOPERM
        pass
    try:
        policy = client.info("memory").get("maxmemory_policy")
    except ResponseError:
        return None
    return str(policy) if policy else None
