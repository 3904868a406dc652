"""Registration in etcd, as go-zero's ``discov.Publisher`` does it for a zrpc server.

- Key ``<Etcd.Key>/<lease id in decimal>`` (``<Etcd.Key>/<Etcd.ID>`` when
  ``ID`` > 0), value the plain ``host:port`` clients dial (``publish_address``),
  attached to a 10 s lease refreshed by a keepalive stream.
- The key deleted by someone else → put back on the same lease.
- The lease lost (expired while etcd was unreachable, or revoked) → a new
  lease and a new registration, tried every second until it works.
- ``stop`` revokes the lease, so the key disappears at once rather than when
  the TTL runs out.

Two daemon threads do the work: one reads the keepalive stream, one watches
the key. Both hand a lost lease to ``_reregister``, which runs once per lost
lease whichever thread notices first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from me2_scheduler.config import EtcdConf
from me2_scheduler.discovery.etcd_client import (
    DELETE,
    EtcdClient,
    EtcdError,
    LeaseNotFound,
    Stream,
    watch_events,
)

log = logging.getLogger("me2_scheduler.discovery")

TTL_SECONDS = 10  # go-zero's discov.TimeToLive
RETRY_SECONDS = 1.0  # go-zero retries a lost registration every second
ALL_INTERFACES = "0.0.0.0"
POD_IP_ENV = "POD_IP"
_SIOCGIFFLAGS, _SIOCGIFADDR = 0x8913, 0x8915
_IFF_UP, _IFF_LOOPBACK = 0x1, 0x8


def internal_ip() -> str:
    """The first non-loopback IPv4 address of the first interface that is up, or "" (Linux)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            packed = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, packed)[16:18])[0]
                if not flags & _IFF_UP or flags & _IFF_LOOPBACK:
                    continue
                address = socket.inet_ntoa(fcntl.ioctl(sock, _SIOCGIFADDR, packed)[20:24])
            except OSError:  # no IPv4 address on this interface
                continue
            if not address.startswith("127."):
                return address
    return ""


def publish_address(listen_on: str, port: int, env: Mapping[str, str] | None = None) -> str:
    """The ``host:port`` to register for a server bound to ``listen_on`` on ``port``.

    go-zero's ``figureOutListenOn``: a host that is empty or ``0.0.0.0`` becomes
    env ``POD_IP``, else ``internal_ip()``, else stays as it is.
    """
    host = listen_on.rpartition(":")[0]
    if host and host != ALL_INTERFACES:
        return f"{host}:{port}"
    ip = (os.environ if env is None else env).get(POD_IP_ENV, "") or internal_ip()
    return f"{ip or host}:{port}"


def full_key(key: str, ident: int) -> str:
    """``<key>/<ident>`` (go-zero's ``makeEtcdKey``)."""
    return f"{key}/{ident}"


@dataclass
class _Registration:
    lease_id: int = 0
    key: str = ""
    revision: int = 0


class Publisher:
    """Keeps ``value`` registered under ``conf.key`` while the server runs."""

    def __init__(self, conf: EtcdConf, value: str, *, ttl_s: int = TTL_SECONDS) -> None:
        self.conf = conf
        self.value = value
        self.ttl_s = ttl_s
        self._client: EtcdClient | None = None
        self._state = _Registration()
        self._lock = threading.Lock()  # guards _state and the re-registration
        self._stop = threading.Event()
        self._streams: dict[str, Stream] = {}
        self._threads: list[threading.Thread] = []

    @property
    def key(self) -> str:
        """The full key registered now (it changes when a lost lease is replaced)."""
        return self._state.key

    @property
    def lease_id(self) -> int:
        """The lease the key is attached to now."""
        return self._state.lease_id

    def start(self) -> None:
        """Register once, then keep the registration alive in the background.

        Raises ``EtcdError`` when the first registration fails (etcd
        unreachable, auth refused), and ``ConfigError`` for unreadable TLS files.
        """
        self._client = EtcdClient(self.conf)
        try:
            self._register()
        except EtcdError:
            self._client.close()
            raise
        for name, target in (("keepalive", self._keepalive_loop), ("watch", self._watch_loop)):
            thread = threading.Thread(target=target, name=f"etcd-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop renewing and revoke the lease, so the key is gone at once. Never raises."""
        self._stop.set()
        for stream in list(self._streams.values()):
            stream.cancel()
        if self._client is None:
            return
        with self._lock:
            state = self._state
        try:
            self._client.revoke(state.lease_id)
            log.info("etcd: unregistered %s (lease revoked)", state.key)
        except EtcdError as exc:
            log.error(
                "etcd: cannot revoke the lease of %s, it expires in %ss: %s",
                state.key,
                self.ttl_s,
                exc,
            )
        for thread in self._threads:
            thread.join(timeout_s)
        self._client.close()

    # --- registration ---------------------------------------------------------------

    def _register(self) -> None:
        """Grant a lease and put the key on it; raise ``EtcdError``."""
        assert self._client is not None
        lease_id = self._client.grant(self.ttl_s)
        key = full_key(self.conf.key, self.conf.id if self.conf.id > 0 else lease_id)
        revision = self._client.put(key, self.value, lease_id)
        self._state = _Registration(lease_id, key, revision)
        log.info(
            "etcd: registered %s -> %s (lease %d, ttl %ds)", key, self.value, lease_id, self.ttl_s
        )

    def _reregister(self, lost_lease: int) -> None:
        """Replace a lost lease: register again every ``RETRY_SECONDS`` until it works or stop."""
        with self._lock:
            if self._state.lease_id != lost_lease or self._stop.is_set():
                return  # the other thread already did it
            log.error("etcd: lease %d of %s is lost; registering again", lost_lease, self.key)
            while not self._stop.is_set():
                try:
                    self._register()
                    break
                except EtcdError as exc:
                    log.error("etcd: cannot register %s again: %s", self.conf.key, exc)
                    self._stop.wait(RETRY_SECONDS)
        for stream in list(self._streams.values()):
            stream.cancel()  # both loops start over on the new lease and key

    def _put_back(self, state: _Registration) -> None:
        """The key was deleted: put it back on the same lease (a new lease if that is gone)."""
        assert self._client is not None
        while not self._stop.is_set():
            try:
                revision = self._client.put(state.key, self.value, state.lease_id)
            except LeaseNotFound:
                self._reregister(state.lease_id)
                return
            except EtcdError as exc:
                log.error("etcd: cannot put back %s: %s", state.key, exc)
                self._stop.wait(RETRY_SECONDS)
                continue
            with self._lock:
                if self._state.lease_id == state.lease_id:
                    self._state.revision = revision
            log.info("etcd: %s was deleted; put it back (lease %d)", state.key, state.lease_id)
            return

    # --- background loops -------------------------------------------------------------

    def _keepalive_loop(self) -> None:
        assert self._client is not None
        while not self._stop.is_set():
            lease_id = self._state.lease_id
            try:
                stream = self._open("keepalive", self._client.keep_alive, lease_id, self.ttl_s / 3)
                for reply in stream:
                    if reply.TTL <= 0:
                        raise LeaseNotFound(f"lease {lease_id} expired")
            except LeaseNotFound:
                self._reregister(lease_id)
                continue
            except EtcdError as exc:
                if not self._stop.is_set():
                    log.error("etcd: keepalive of lease %d interrupted: %s", lease_id, exc)
            self._stop.wait(RETRY_SECONDS)

    def _watch_loop(self) -> None:
        assert self._client is not None
        while not self._stop.is_set():
            state = _Registration(**vars(self._state))
            try:
                stream = self._open(
                    "watch", self._client.watch, state.key, start_revision=state.revision + 1
                )
                for event in watch_events(stream):
                    if event.type == DELETE and not self._stop.is_set():
                        self._put_back(state)
            except EtcdError as exc:
                if not self._stop.is_set():
                    log.error("etcd: watch of %s interrupted: %s", state.key, exc)
                    self._stop.wait(RETRY_SECONDS)

    def _open(self, name: str, opener: Callable[..., Stream], *args: Any, **kwargs: Any) -> Stream:
        """Open a stream and remember it, so ``stop`` and ``_reregister`` can cancel it."""
        stream = opener(*args, **kwargs)
        self._streams[name] = stream
        if self._stop.is_set():  # stop ran between the check and the open
            stream.cancel()
        return stream
