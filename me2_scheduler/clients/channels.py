"""gRPC channels to the downstream zrpc services: endpoint resolution, picking and errors.

``resolve_target`` applies go-zero's precedence, ``Endpoints`` > ``Target`` >
``Etcd``. A static target (endpoints, ``direct:///``, ``dns:///``...) gets one
channel balancing round-robin over its addresses; an etcd target
(``etcd://h1,h2/key``, or ``Etcd.Hosts`` + ``Etcd.Key``) gets an
``EndpointWatcher`` and one channel per registered endpoint, picked per call
(``EndpointPool``). Everything is created lazily, in the process that calls
(never at import, never before a fork). TLS is on when the client config
names a CA or a certificate; ``App``/``Token`` travel as ``app``/``token``
metadata, as go-zero's credentials do.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc

from me2_scheduler import metrics
from me2_scheduler.channel_recovery import ChannelRecovery
from me2_scheduler.clients.breaker import AdaptiveBreaker, BreakerOpen, acceptable
from me2_scheduler.closeable import Closeable
from me2_scheduler.config import EtcdConf, RpcClientConf
from me2_scheduler.discovery.addresses import address_list_target
from me2_scheduler.discovery.resolver import (
    ETCD_SCHEME,
    Endpoint,
    EndpointPool,
    EndpointWatcher,
    etcd_conf_from_target,
    key_prefix,
)
from me2_scheduler.errors import DownstreamError, SchedulerError
from me2_scheduler.tls import channel_credentials, secure_channel

# Keepalive within what a go-zero server accepts. go-zero's zrpc server sets
# only MaxConnectionIdle (5 min) and no EnforcementPolicy, so grpc-go's
# default applies: a client may ping at most every 5 minutes (MinTime), and
# never while it has no call in flight (PermitWithoutStream=false); beyond
# that the server counts strikes and closes the connection with GOAWAY
# too_many_pings. Hence 5.5 minutes (a margin over MinTime for timer skew)
# and no pings without calls. The keepalive only catches a connection that
# stays silent for minutes; a silent connection is left within seconds by the
# reset after consecutive deadlines (``channel_recovery``).
KEEPALIVE_TIME_MS = 330_000
KEEPALIVE_TIMEOUT_MS = 20_000  # grpc-go's default client Timeout
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # grpc-core (1.85 measured) waits for a keepalive ack this long, not
    # keepalive_timeout_ms: its default is a minute.
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 0),
    # grpc-core sends at most 2 pings while it sends no data or headers, the
    # keepalive ping included: a long call waiting for its answer would stop
    # being checked after two. 0 lifts that; the server still sees at most one
    # ping per KEEPALIVE_TIME_MS, so it is as safe against grpc-go as above.
    ("grpc.http2.max_pings_without_data", 0),
    # Each channel owns its connections: without this a new channel to the same
    # address reuses the old one's connection from gRPC's global pool, and a
    # channel reset would reconnect nothing.
    ("grpc.use_local_subchannel_pool", 1),
    # A restarted downstream is used again within seconds, not after the
    # default two-minute reconnect backoff.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)
# The calls that may succeed when simply tried again later.
_UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_PASS_THROUGH_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
ETCD_LOAD_TIMEOUT_S = 5.0  # the first read of the endpoints waits at most this (or the call's)


@dataclass(frozen=True)
class Caller:
    """The incoming call an outgoing call is made for, as go-zero hands its ctx on.

    The outgoing call gets ``timeout_s`` and is cancelled when the incoming
    call ends first. ``on_end`` registers a callback run when the incoming
    call ends and returns False when it has ended already: exactly
    ``grpc.ServicerContext.add_callback``.
    """

    timeout_s: float
    on_end: Callable[[Callable[[], None]], bool]


def resolve_target(conf: RpcClientConf) -> str:
    """The gRPC target for a zrpc client config: ``Endpoints`` > ``Target`` > ``Etcd``.

    Endpoints and ``direct:///h1:p1,h2:p2`` become one ``ipv4:``/``ipv6:``
    address list (host names resolved now); ``dns:``, ``ipv4:``, ``ipv6:`` and
    ``unix:`` targets pass through; etcd (``etcd://h1,h2/key`` or the ``Etcd``
    block) becomes ``etcd://h1,h2/key``. Raises ``SchedulerError`` for an
    unknown scheme, an etcd target without a key, or an empty config.
    """
    if conf.endpoints:
        return address_list_target(conf.endpoints)
    target = conf.target.strip()
    if target.startswith("direct://"):
        hosts = target.removeprefix("direct://").lstrip("/")
        return address_list_target(tuple(h for h in hosts.split(",") if h.strip()))
    etcd = etcd_conf(conf)
    if etcd is not None:
        return f"{ETCD_SCHEME}{','.join(etcd.hosts)}/{etcd.key}"
    if target.startswith(_PASS_THROUGH_SCHEMES):
        return target
    if "://" in target:
        raise SchedulerError(f"unsupported target scheme: {target!r}")
    if target:
        return f"dns:///{target}"
    raise SchedulerError("no Endpoints, Target or Etcd configured for an RPC client")


def etcd_conf(conf: RpcClientConf) -> EtcdConf | None:
    """The etcd cluster and key to discover the service from, or None when not by etcd.

    Raises ``SchedulerError`` for an etcd target or block without hosts or key.
    """
    target = conf.target.strip()
    if conf.endpoints or (target and not target.startswith(ETCD_SCHEME)):
        return None
    if target:
        return etcd_conf_from_target(target, conf.etcd)
    if not conf.etcd.hosts:
        return None
    if not conf.etcd.key:
        raise SchedulerError("Etcd.Key must name the service to discover")
    return replace(conf.etcd, id=0)


def channel_options(conf: RpcClientConf) -> tuple[tuple[str, Any], ...]:
    """``CHANNEL_OPTIONS`` with the configured ``MaxMsgSize`` both ways."""
    return (
        *CHANNEL_OPTIONS,
        ("grpc.max_send_message_length", conf.max_msg_size),
        ("grpc.max_receive_message_length", conf.max_msg_size),
    )


def client_credentials(conf: RpcClientConf, prefix: str = "") -> grpc.ChannelCredentials | None:
    """TLS credentials when ``CACertFile`` or ``CertFile`` is set, else None (plaintext)."""
    if not (conf.ca_file or conf.cert_file):
        return None
    return channel_credentials(conf.ca_file, conf.cert_file, conf.key_file, prefix=prefix)


class RpcClient(Closeable):
    """Channels per client object, per process; one call goes to one picked endpoint."""

    service = "rpc"  # for messages: "Action", "Diary"

    def __init__(self, conf: RpcClientConf) -> None:
        self.conf = conf
        self._lock = threading.Lock()
        self._pid = 0
        self._pool: EndpointPool | None = None
        self._watcher: EndpointWatcher | None = None
        self._guards: tuple[int, AdaptiveBreaker, ChannelRecovery] | None = None  # per pid

    def _make_stub(self, channel: grpc.Channel) -> Any:
        raise NotImplementedError

    def _routing(self) -> tuple[EndpointPool, EndpointWatcher | None]:
        """This process's pool (and etcd watcher), created on first use; raise SchedulerError."""
        with self._lock:
            # Channels and threads inherited through fork are unusable: start afresh.
            if self._pool is None or self._pid != os.getpid():
                etcd = etcd_conf(self.conf)
                target = resolve_target(self.conf) if etcd is None else ""
                pool, watcher = self._open(), None
                if etcd is None:
                    pool.update((target,))
                else:
                    watcher = EndpointWatcher(etcd, on_change=pool.update)
                    watcher.start()
                self._pool, self._watcher, self._pid = pool, watcher, os.getpid()
            return self._pool, self._watcher

    def _open(self) -> EndpointPool:
        credentials = client_credentials(self.conf, f"{self.service}Rpc.")
        options = channel_options(self.conf)
        return EndpointPool(
            lambda target: secure_channel(target, credentials, options), random.Random()
        )

    def _pick(self, timeout_s: float) -> tuple[EndpointPool, Endpoint]:
        """An endpoint for the next call; raise ``DownstreamError`` (unavailable) when none."""
        pool, watcher = self._routing()
        if watcher is not None and not watcher.wait_loaded(min(timeout_s, ETCD_LOAD_TIMEOUT_S)):
            problem = watcher.last_error or "no answer in time"
            raise DownstreamError(
                f"{self.service} endpoints cannot be read from etcd: {problem}", unavailable=True
            )
        endpoint = pool.pick()
        if endpoint is None:
            where = key_prefix(watcher.conf.key) if watcher else resolve_target(self.conf)
            raise DownstreamError(
                f"no {self.service} endpoint is registered under {where}", unavailable=True
            )
        return pool, endpoint

    def endpoints(self) -> tuple[str, ...]:
        """The targets calls may go to now (etcd: the live registered endpoints)."""
        with self._lock:
            pool = self._pool if self._pid == os.getpid() else None
        return pool.addresses() if pool is not None else ()

    def close(self) -> None:
        """Close the channels and the etcd watch if this process opened them; reusable after."""
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                if self._watcher is not None:
                    self._watcher.close()
                self._pool.close()
            self._pool, self._watcher = None, None
            guards = self._guards
        if guards is not None and guards[0] == os.getpid():
            guards[2].withdraw()  # a closed client's trouble is not the process's

    def call(
        self, method: str, request: Any, timeout_s: float | None, caller: Caller | None = None
    ) -> Any:
        """Invoke ``method`` on a picked endpoint through the adaptive breaker; the response.

        ``timeout_s`` None means the config's ``Timeout``; a ``caller`` brings
        its own timeout instead, and cancels the call when it goes away.
        Raises ``BreakerOpen`` (a ``DownstreamError``, unavailable) when the
        breaker drops the call here, as go-zero's zrpc client does;
        ``DownstreamError`` for a gRPC error, a call cancelled that way
        (``unavailable``), or when no endpoint can be picked;
        ``SchedulerError`` when the config resolves to nothing.
        """
        breaker, recovery = self._process_guards()
        try:
            ticket = breaker.allow()
        except BreakerOpen as exc:
            recovery.failed(str(exc))
            raise
        try:
            response = self._invoke(method, request, timeout_s, caller)
        except DownstreamError as exc:
            if exc.code is None:  # no endpoint to call
                recovery.failed(str(exc))
            # No endpoint to call counts as UNAVAILABLE, as in go-zero.
            ticket.record(exc.code or grpc.StatusCode.UNAVAILABLE)
            raise
        except BaseException:
            ticket.reject()
            raise
        ticket.accept()
        return response

    def _invoke(
        self, method: str, request: Any, timeout_s: float | None, caller: Caller | None
    ) -> Any:
        if caller is not None:
            timeout_s = caller.timeout_s
        timeout = self.conf.timeout_ms / 1000 if timeout_s is None else timeout_s
        pool, endpoint = self._pick(timeout if timeout > 0 else ETCD_LOAD_TIMEOUT_S)
        invoke = getattr(
            endpoint.stubs.get("stub")
            or endpoint.stubs.setdefault("stub", self._make_stub(endpoint.channel)),
            method,
        )
        options = {"timeout": timeout if timeout > 0 else None, "metadata": self._auth()}
        try:
            with pool.using(endpoint):
                if caller is None:
                    response = invoke(request, **options)
                else:
                    response = answer_for(caller, invoke.future(request, **options))
        except grpc.RpcError as exc:
            error = rpc_error(self.service, exc)
            self._note_error(pool, endpoint, error)
            raise error from None
        except grpc.FutureCancelledError:
            raise DownstreamError(
                f"{self.service} call cancelled: the caller went away (its deadline passed"
                f" or it cancelled) before {self.service} answered",
                unavailable=True,
                code=grpc.StatusCode.CANCELLED,
            ) from None
        self._process_guards()[1].answered(endpoint)
        return response

    def _note_error(self, pool: EndpointPool, endpoint: Endpoint, error: DownstreamError) -> None:
        """Count a deadline towards a channel reset; report other failures as trouble."""
        recovery = self._process_guards()[1]
        if endpoint.retired:
            return  # a call on a channel replaced meanwhile says nothing about the new one
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            recovery.missed_deadline(endpoint, endpoint.address, lambda: pool.replace(endpoint))
        elif error.code == grpc.StatusCode.CANCELLED:
            pass  # the caller went away: nothing learnt about the service
        elif not acceptable(error.code):
            recovery.failed(str(error))
        else:
            recovery.answered(endpoint)  # an error of the service's own: it answered

    def _process_guards(self) -> tuple[AdaptiveBreaker, ChannelRecovery]:
        """This process's breaker and channel recovery (inherited locks could deadlock)."""
        with self._lock:
            if self._guards is None or self._guards[0] != os.getpid():
                rejected = metrics.BREAKER_REJECTIONS.labels(service=self.service).inc
                reset = metrics.CHANNEL_RESETS.labels(service=self.service).inc
                self._guards = (
                    os.getpid(),
                    AdaptiveBreaker(self.service, on_reject=rejected),
                    ChannelRecovery(self.service, self.service.lower(), on_reset=reset),
                )
            return self._guards[1], self._guards[2]

    def channel_trouble(self) -> str:
        """Why this process's channels are in trouble now ("" when they are not)."""
        return self._process_guards()[1].reason()

    def _auth(self) -> tuple[tuple[str, str], ...] | None:
        # go-zero's App/Token authentication travels as "app" and "token" metadata.
        if self.conf.app and self.conf.token:
            return (("app", self.conf.app), ("token", self.conf.token))
        return None


def answer_for(caller: Caller, future: Any) -> Any:
    """The result of an outgoing call ``future``, cancelled as soon as ``caller`` ends.

    Raises what ``future.result()`` raises: ``grpc.RpcError``, or
    ``grpc.FutureCancelledError`` once cancelled.
    """
    # Also run when the caller ends normally, after this call is done: a no-op then.
    if not caller.on_end(future.cancel):
        future.cancel()  # the caller is gone already
    return future.result()


def rpc_error(service: str, exc: grpc.RpcError) -> DownstreamError:
    """A one-sentence ``DownstreamError`` naming the gRPC status of a failed call."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or "no details"
    details = details.replace("\n", " ")[:200]
    return DownstreamError(
        f"{service} call failed with {code.name}: {details}",
        unavailable=code in _UNAVAILABLE_CODES,
        code=code,
    )
