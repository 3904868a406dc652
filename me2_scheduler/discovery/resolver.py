"""Discovery of a zrpc service registered in etcd, and spreading calls over its endpoints.

go-zero's subscriber: read every key under ``<Key>/`` (the trailing slash
matters: ``action.rpc2/...`` is another service than ``action.rpc``), keep the
distinct values (``host:port``), then watch the prefix and apply each put and
delete. When the watch breaks (etcd restarted, revision compacted) the whole
prefix is read again after a second.

``EndpointPool`` keeps one gRPC channel per live endpoint and picks one per
call with "power of two choices": of two random endpoints, the one with fewer
calls in flight. An endpoint whose last call failed UNAVAILABLE (a server
killed before its lease ran out) is passed over for ``COOLDOWN_SECONDS``
while another one answers. An endpoint removed from etcd gets no new call;
its channel is closed once its last call in flight returns; so is a channel
``replace``-d by a new one (``channel_recovery``: a channel whose calls keep
missing their deadline).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import grpc

from me2_scheduler.config import EtcdConf
from me2_scheduler.discovery.etcd_client import (
    DELETE,
    EtcdClient,
    EtcdError,
    Stream,
    watch_events,
)
from me2_scheduler.errors import SchedulerError

log = logging.getLogger("me2_scheduler.discovery")

ETCD_SCHEME = "etcd://"
RETRY_SECONDS = 1.0
COOLDOWN_SECONDS = 2.0  # an endpoint that refused a connection is passed over this long


def key_prefix(key: str) -> str:
    """The prefix a service's endpoints live under: ``<key>/`` (go-zero's ``makeKeyPrefix``)."""
    return f"{key}/"


def etcd_conf_from_target(target: str, base: EtcdConf) -> EtcdConf:
    """``etcd://h1:p1,h2:p2/key`` as an ``EtcdConf``; user, password and TLS files from ``base``.

    Raises ``SchedulerError`` when the target names no host or no key.
    """
    hosts, _, key = target.removeprefix(ETCD_SCHEME).partition("/")
    host_list = tuple(h.strip() for h in hosts.split(",") if h.strip())
    if not host_list or not key.strip("/"):
        raise SchedulerError(f"etcd target {target!r} must be etcd://host:port[,host:port]/key")
    return replace(base, hosts=host_list, key=key.strip("/"), id=0)


class EndpointWatcher:
    """A live view of the distinct endpoints registered under ``<conf.key>/``.

    ``on_change`` is called (from the watcher's thread) with the sorted
    endpoints after every change. Start it in the process that uses it.
    """

    def __init__(
        self, conf: EtcdConf, on_change: Callable[[tuple[str, ...]], None] | None = None
    ) -> None:
        self.conf = conf
        self.prefix = key_prefix(conf.key)
        self._on_change = on_change or (lambda endpoints: None)
        self._values: dict[str, str] = {}  # etcd key → host:port
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._stream: Stream | None = None
        self._client: EtcdClient | None = None
        self._thread: threading.Thread | None = None
        self.last_error = ""

    def start(self) -> None:
        """Connect and load in the background; see ``wait_loaded``. Raises ``ConfigError``."""
        self._client = EtcdClient(self.conf)
        self._thread = threading.Thread(target=self._run, name="etcd-discovery", daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout_s: float) -> bool:
        """Wait until the first read of the prefix succeeded; return whether it did."""
        return self._loaded.wait(timeout_s)

    def endpoints(self) -> tuple[str, ...]:
        """The distinct registered ``host:port`` values, sorted."""
        with self._lock:
            return tuple(sorted(set(self._values.values())))

    def close(self) -> None:
        """Stop watching and close the etcd channel."""
        self._stop.set()
        if self._stream is not None:
            self._stream.cancel()
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                revision = self._load()
                self._watch(revision)
            except EtcdError as exc:
                if self._stop.is_set():
                    return
                self.last_error = str(exc)
                log.error("etcd: discovery of %s interrupted: %s", self.prefix, exc)
            self._stop.wait(RETRY_SECONDS)

    def _load(self) -> int:
        assert self._client is not None
        values, revision = self._client.get_prefix(self.prefix)
        with self._lock:
            self._values = values
        self._notify()
        self._loaded.set()  # after on_change: a caller woken by it finds the endpoints in place
        return revision

    def _watch(self, revision: int) -> None:
        assert self._client is not None
        self._stream = self._client.watch(self.prefix, prefix=True, start_revision=revision + 1)
        if self._stop.is_set():
            self._stream.cancel()
        for event in watch_events(self._stream):
            key = event.kv.key.decode()
            with self._lock:
                if event.type == DELETE:
                    self._values.pop(key, None)
                else:
                    self._values[key] = event.kv.value.decode()
            self._notify()

    def _notify(self) -> None:
        endpoints = self.endpoints()
        log.info("etcd: %s endpoints: %s", self.prefix, ", ".join(endpoints) or "none")
        self._on_change(endpoints)


@dataclass(eq=False)
class Endpoint:
    """One endpoint's channel, its stubs and its calls in flight."""

    address: str
    channel: grpc.Channel
    inflight: int = 0
    retired: bool = False
    failed_at: float = float("-inf")  # time.monotonic() of the last UNAVAILABLE answer
    stubs: dict[str, object] = field(default_factory=dict)

    @property
    def failing(self) -> bool:
        """Whether a call failed UNAVAILABLE within the last ``COOLDOWN_SECONDS``."""
        return time.monotonic() - self.failed_at < COOLDOWN_SECONDS


class EndpointPool:
    """One channel per endpoint; ``pick`` spreads calls (p2c on calls in flight)."""

    def __init__(self, make_channel: Callable[[str], grpc.Channel], rng: random.Random) -> None:
        self._make_channel = make_channel
        self._rng = rng
        self._lock = threading.Lock()
        self._live: dict[str, Endpoint] = {}

    def update(self, addresses: tuple[str, ...]) -> None:
        """Open channels to new endpoints; retire the ones no longer listed."""
        with self._lock:
            for address in addresses:
                if address not in self._live:
                    self._live[address] = self._open(address)
            for address in set(self._live) - set(addresses):
                gone = self._live.pop(address)
                gone.retired = True
                if gone.inflight == 0:
                    self._close(gone)

    def addresses(self) -> tuple[str, ...]:
        """The endpoints calls may go to now."""
        with self._lock:
            return tuple(sorted(self._live))

    def pick(self) -> Endpoint | None:
        """Two random endpoints (not failing ones first), the one with fewer calls in flight."""
        with self._lock:
            live = list(self._live.values())
        healthy = [e for e in live if not e.failing] or live
        if len(healthy) < 2:
            return healthy[0] if healthy else None
        first, second = self._rng.sample(healthy, 2)
        return first if first.inflight <= second.inflight else second

    @contextmanager
    def using(self, endpoint: Endpoint) -> Iterator[Endpoint]:
        """Count a call in flight on ``endpoint``; close it after its last call if retired.

        A ``grpc.RpcError`` with status UNAVAILABLE leaving the block marks the
        endpoint failing; the error goes on.
        """
        with self._lock:
            endpoint.inflight += 1
        try:
            yield endpoint
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAVAILABLE:
                endpoint.failed_at = time.monotonic()
            raise
        finally:
            with self._lock:
                endpoint.inflight -= 1
                if endpoint.retired and endpoint.inflight == 0:
                    self._close(endpoint)

    def replace(self, endpoint: Endpoint) -> bool:
        """Give ``endpoint``'s address a new channel (new connections); retire the old one.

        The old channel takes no new call and is closed after its last call
        in flight. Returns False when ``endpoint`` is no longer the live one
        (replaced or removed meanwhile).
        """
        with self._lock:
            if self._live.get(endpoint.address) is not endpoint:
                return False
            self._live[endpoint.address] = self._open(endpoint.address)
            endpoint.retired = True
            if endpoint.inflight == 0:
                self._close(endpoint)
        return True

    def close(self) -> None:
        """Close every channel."""
        self.update(())

    def _open(self, address: str) -> Endpoint:
        return Endpoint(address, self._make_channel(address))

    @staticmethod
    def _close(endpoint: Endpoint) -> None:
        endpoint.channel.close()
