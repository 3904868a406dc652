"""A small etcd v3 client over etcd's own gRPC API (the stubs of ``protos/etcd.proto``).

Why this and not a PyPI client: python-etcd3 is unmaintained and breaks on
protobuf >= 4; etcd3gw speaks the JSON gateway over HTTP, so its watches and
keepalives are long HTTP responses that cannot be cancelled cleanly from
another thread, and it brings requests, futurist and pbr. etcd's gRPC API is
what go-zero's clientv3 speaks; it rides on the grpcio we already ship, with
real bidirectional streams for Watch and LeaseKeepAlive, per-call deadlines,
and TLS through gRPC's own credentials.

Every unary call has a deadline (``call_timeout_s``). With ``User``/``Pass``
the client calls ``Auth.Authenticate`` and sends the token as ``token``
metadata, authenticating again once when etcd says the token is no longer
valid (simple tokens expire). Errors are ``EtcdError``; a lease that expired
or was revoked is ``LeaseNotFound``. Create a client in the process that uses
it (after fork), and ``close`` it there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from me2_scheduler import metrics
from me2_scheduler.channel_recovery import ChannelRecovery
from me2_scheduler.closeable import Closeable
from me2_scheduler.config import EtcdConf
from me2_scheduler.discovery.addresses import address_list_target
from me2_scheduler.errors import SchedulerError
from me2_scheduler.protos import etcd_pb2 as pb
from me2_scheduler.protos import etcd_pb2_grpc as pb_grpc
from me2_scheduler.tls import channel_credentials, secure_channel

CALL_TIMEOUT_S = 5.0
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.lb_policy_name", "round_robin"),
    # A half-open connection to etcd is noticed within ~15 s, so a stream on a
    # dead member is replaced before a 10 s lease runs out for good. etcd
    # refuses pings more often than every 5 s (its --grpc-keepalive-min-time)
    # and pings without a stream (PermitWithoutStream=false), as go-zero's
    # etcd does; a watch or a lease keepalive stream is always open here.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),  # what grpc-core really waits for the ack
    ("grpc.keepalive_permit_without_calls", 0),
    # A quiet watch sends no data: grpc-core's default of 2 pings without data
    # would stop the keepalive after 20 s, and a silent member would never be left.
    ("grpc.http2.max_pings_without_data", 0),
    # A reset after deadlines in a row must open new connections (see
    # channel_recovery), not reuse the old one from gRPC's global pool.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
DELETE = pb.Event.DELETE
PUT = pb.Event.PUT


class EtcdError(SchedulerError):
    """etcd failed, refused the call or could not be reached in time."""


class LeaseNotFound(EtcdError):
    """The lease expired or was revoked: its keys are gone."""


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range or watch cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def etcd_target(hosts: tuple[str, ...]) -> tuple[str, bool]:
    """The gRPC target for etcd ``Hosts`` and whether a host asked for TLS (``https://``)."""
    bare = tuple(h.strip().removeprefix("http://").removeprefix("https://") for h in hosts)
    return address_list_target(bare), any(h.strip().startswith("https://") for h in hosts)


def _credentials(conf: EtcdConf, https: bool) -> grpc.ChannelCredentials | None:
    if not (https or conf.ca_file or conf.cert_file):
        return None
    return channel_credentials(
        conf.ca_file, conf.cert_file, conf.cert_key_file, prefix="Etcd.", key_name="CertKeyFile"
    )


def _error(what: str, exc: grpc.RpcError) -> EtcdError:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or code.name
    if "lease not found" in details:
        return LeaseNotFound(f"etcd {what}: {details}")
    return EtcdError(f"etcd {what} failed with {code.name}: {details}")


class Stream:
    """A bidirectional etcd stream being read; ``cancel`` ends it from any thread."""

    def __init__(
        self,
        what: str,
        open_call: Callable[[Iterator[Any]], Any],
        first: Any,
        on_unauthenticated: Callable[[], None] = lambda: None,
    ) -> None:
        self._what = what
        self._on_unauthenticated = on_unauthenticated
        self._closed = threading.Event()
        self._call = open_call(self._requests(first))

    def _requests(self, first: Any) -> Iterator[Any]:
        yield first
        self._closed.wait()  # keep the request side open until cancelled

    def __iter__(self) -> Iterator[Any]:
        """The responses; ends quietly on ``cancel``, raises ``EtcdError`` on a failure."""
        try:
            yield from self._call
        except grpc.RpcError as exc:
            if self._closed.is_set():
                return
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
                self._on_unauthenticated()  # the next stream authenticates again
            raise _error(self._what, exc) from None
        finally:
            self.cancel()  # however it ended, release the thread feeding the requests

    def cancel(self) -> None:
        """End the stream (idempotent)."""
        self._closed.set()
        self._call.cancel()


class KeepAliveStream(Stream):
    """``LeaseKeepAlive``: one request every ``interval_s``, one response per request."""

    def __init__(
        self,
        open_call: Callable,
        lease_id: int,
        interval_s: float,
        on_unauthenticated: Callable[[], None] = lambda: None,
    ) -> None:
        self._interval_s = interval_s
        first = pb.LeaseKeepAliveRequest(ID=lease_id)
        super().__init__("lease keepalive", open_call, first, on_unauthenticated)

    def _requests(self, first: Any) -> Iterator[Any]:
        while True:
            yield first
            if self._closed.wait(self._interval_s):
                return


class EtcdClient(Closeable):
    """KV, lease, watch and auth calls on one channel to the etcd cluster ``conf.hosts``."""

    def __init__(self, conf: EtcdConf, *, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        """Open the channel (lazily connected). Raises ``ConfigError`` for unreadable TLS files."""
        target, https = etcd_target(conf.hosts)
        self.conf = conf
        self.call_timeout_s = call_timeout_s
        self._target = target
        self._credentials = _credentials(conf, https)
        self._channel_lock = threading.Lock()
        self._connect()
        self._token_lock = threading.Lock()
        self._token = ""
        self._recovery = ChannelRecovery(
            "etcd", "etcd", on_reset=metrics.CHANNEL_RESETS.labels(service="etcd").inc
        )

    def _connect(self) -> None:
        """A new channel (new connections) and its stubs; the old channel, if any, is closed."""
        channel = secure_channel(self._target, self._credentials, CHANNEL_OPTIONS)
        with self._channel_lock:
            old = getattr(self, "_channel", None)
            self._channel = channel
            self._kv = pb_grpc.KVStub(channel)
            self._lease = pb_grpc.LeaseStub(channel)
            self._watch = pb_grpc.WatchStub(channel)
            self._auth = pb_grpc.AuthStub(channel)
        if old is not None:
            old.close()  # its streams end with an error: their loops open them again here

    def _reset(self, channel: grpc.Channel) -> bool:
        """Replace ``channel`` if it is still the one in use (see ``channel_recovery``)."""
        if self._channel is not channel:
            return False
        self._connect()
        return True

    # --- plumbing --------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        if not (self.conf.user and self.conf.password):
            return None
        with self._token_lock:
            if not self._token:
                self._token = self._authenticate()
            return (("token", self._token),)

    def _authenticate(self) -> str:
        request = pb.AuthenticateRequest(name=self.conf.user, password=self.conf.password)
        try:
            return self._auth.Authenticate(request, timeout=self.call_timeout_s).token
        except grpc.RpcError as exc:
            raise _error(f"authenticate as {self.conf.user!r}", exc) from None

    def _unary(self, what: str, method: Callable[..., Any], request: Any) -> Any:
        channel = self._channel
        for attempt in (1, 2):
            try:
                reply = method(request, timeout=self.call_timeout_s, metadata=self._metadata())
            except grpc.RpcError as exc:
                expired = exc.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
                if attempt == 1 and expired and self.conf.user:
                    self._forget_token()  # authenticate again, once
                    continue
                error = _error(what, exc)
                self._note_error(channel, exc, error)
                raise error from None
            self._recovery.answered(channel)
            return reply
        raise AssertionError("unreachable")

    def _note_error(self, channel: grpc.Channel, exc: grpc.RpcError, error: EtcdError) -> None:
        """Count a deadline towards a channel reset; etcd unreachable is trouble too."""
        if channel is not self._channel:
            return  # a call on a channel replaced meanwhile says nothing about the new one
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            where = ",".join(self.conf.hosts)
            self._recovery.missed_deadline(channel, where, lambda: self._reset(channel))
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
            self._recovery.failed(str(error))
        else:
            self._recovery.answered(channel)  # etcd answered (a refusal of its own)

    def _forget_token(self) -> None:
        with self._token_lock:
            self._token = ""

    # --- KV --------------------------------------------------------------------

    def get_prefix(self, prefix: str) -> tuple[dict[str, str], int]:
        """Every ``key → value`` under ``prefix``, and the store revision they were read at."""
        key = prefix.encode()
        request = pb.RangeRequest(key=key, range_end=prefix_range_end(key))
        reply = self._unary(f"range {prefix}*", self._kv.Range, request)
        found = {kv.key.decode(): kv.value.decode() for kv in reply.kvs}
        return found, reply.header.revision

    def get(self, key: str) -> pb.KeyValue | None:
        """The key's record (value, lease, revisions), or None when absent."""
        reply = self._unary(f"get {key}", self._kv.Range, pb.RangeRequest(key=key.encode()))
        return reply.kvs[0] if reply.kvs else None

    def put(self, key: str, value: str, lease_id: int = 0) -> int:
        """Write ``key``, attached to ``lease_id`` (0: none); return the new revision."""
        request = pb.PutRequest(key=key.encode(), value=value.encode(), lease=lease_id)
        return self._unary(f"put {key}", self._kv.Put, request).header.revision

    def delete(self, key: str) -> int:
        """Delete ``key``; return how many keys were deleted (0 or 1)."""
        request = pb.DeleteRangeRequest(key=key.encode())
        return self._unary(f"delete {key}", self._kv.DeleteRange, request).deleted

    # --- leases ----------------------------------------------------------------

    def grant(self, ttl_s: int) -> int:
        """A new lease of ``ttl_s`` seconds; return its id."""
        reply = self._unary("lease grant", self._lease.LeaseGrant, pb.LeaseGrantRequest(TTL=ttl_s))
        if reply.error:
            raise EtcdError(f"etcd lease grant: {reply.error}")
        return reply.ID

    def revoke(self, lease_id: int) -> None:
        """Revoke a lease: etcd deletes every key attached to it at once."""
        self._unary("lease revoke", self._lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=lease_id))

    def time_to_live(self, lease_id: int) -> tuple[int, int]:
        """``(remaining TTL, granted TTL)`` in seconds; the remaining TTL is -1 once expired."""
        request = pb.LeaseTimeToLiveRequest(ID=lease_id)
        reply = self._unary("lease time-to-live", self._lease.LeaseTimeToLive, request)
        return reply.TTL, reply.grantedTTL

    def keep_alive(self, lease_id: int, interval_s: float) -> KeepAliveStream:
        """Refresh ``lease_id`` every ``interval_s``; each response's ``TTL`` is <= 0 once lost."""
        open_call = self._open(self._lease.LeaseKeepAlive)
        return KeepAliveStream(open_call, lease_id, interval_s, self._forget_token)

    # --- watch -----------------------------------------------------------------

    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> Stream:
        """Stream ``WatchResponse``s for ``key`` (or every key under it) from ``start_revision``."""
        create = pb.WatchCreateRequest(key=key.encode(), start_revision=start_revision)
        if prefix:
            create.range_end = prefix_range_end(create.key)
        first = pb.WatchRequest(create_request=create)
        return Stream(f"watch {key}", self._open(self._watch.Watch), first, self._forget_token)

    def _open(self, method: Callable[..., Any]) -> Callable[[Iterator[Any]], Any]:
        def open_call(requests: Iterator[Any]) -> Any:
            return method(requests, metadata=self._metadata())  # raises EtcdError

        return open_call

    def close(self) -> None:
        """Close the channel; open streams end."""
        self._channel.close()


def watch_events(stream: Stream) -> Iterator[pb.Event]:
    """The events of a watch stream; raise ``EtcdError`` when etcd cancels the watch."""
    for reply in stream:
        if reply.canceled:
            reason = reply.cancel_reason or f"compacted at revision {reply.compact_revision}"
            raise EtcdError(f"etcd cancelled the watch: {reason}")
        yield from reply.events
