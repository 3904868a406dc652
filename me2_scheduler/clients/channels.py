"""gRPC channels to the downstream zrpc services: endpoint resolution and error mapping.

Endpoint discovery lives in one function, ``resolve_target``, so etcd
discovery can be added later without touching the clients. A channel is
created lazily, in the process that calls (never at import, never before a
fork), and balances round-robin over every resolved address.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import grpc

from me2_scheduler.config import RpcClientConf
from me2_scheduler.errors import DownstreamError, SchedulerError

_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.lb_policy_name", "round_robin"),
    # grpc-go servers (the other Me2 services) answer pings more often than
    # every 5 minutes with GOAWAY too_many_pings, so ping no faster than that.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # A restarted downstream is used again within seconds, not after the
    # default two-minute reconnect backoff.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
)
# The calls that may succeed when simply tried again later.
_UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_PASS_THROUGH_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


def resolve_target(conf: RpcClientConf) -> str:
    """The gRPC target for a zrpc client config: ``Endpoints`` > ``Target`` > ``Etcd``.

    Endpoints and ``direct:///h1:p1,h2:p2`` become one ``ipv4:``/``ipv6:``
    address list (host names resolved now); ``dns:``, ``ipv4:``, ``ipv6:`` and
    ``unix:`` targets pass through. Raises ``SchedulerError`` for etcd (not
    supported yet), an unknown scheme, or an empty config.
    """
    if conf.endpoints:
        return _address_list_target(conf.endpoints)
    target = conf.target.strip()
    if target.startswith("direct://"):
        hosts = target.removeprefix("direct://").lstrip("/")
        return _address_list_target(tuple(h for h in hosts.split(",") if h.strip()))
    if target.startswith("etcd:") or (not target and conf.etcd.hosts):
        raise SchedulerError("etcd discovery is not supported yet: configure Endpoints")
    if target.startswith(_PASS_THROUGH_SCHEMES):
        return target
    if "://" in target:
        raise SchedulerError(f"unsupported target scheme: {target!r}")
    if target:
        return f"dns:///{target}"
    raise SchedulerError("no Endpoints, Target or Etcd configured for an RPC client")


def _address_list_target(endpoints: tuple[str, ...]) -> str:
    """``ipv4:a:p,b:p`` (or ``ipv6:[a]:p,...``) for host:port endpoints; raise SchedulerError."""
    if not endpoints:
        raise SchedulerError("direct target names no endpoint")
    v4: list[str] = []
    v6: list[str] = []
    for endpoint in endpoints:
        host, port = _split_host_port(endpoint.strip())
        for address in _addresses(host, port):
            is_v4 = ipaddress.ip_address(address).version == 4
            (v4 if is_v4 else v6).append(f"{address}:{port}" if is_v4 else f"[{address}]:{port}")
    # One target holds one address family; IPv4 wins (localhost has both).
    if v4:
        return "ipv4:" + ",".join(dict.fromkeys(v4))
    return "ipv6:" + ",".join(dict.fromkeys(v6))


def _split_host_port(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SchedulerError(f"endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


def _addresses(host: str, port: int) -> list[str]:
    """IP literals stay as they are; a host name is resolved (all its addresses)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SchedulerError(f"cannot resolve endpoint host {host!r}: {exc}") from None
    return [str(info[4][0]).split("%")[0] for info in infos]


class RpcClient:
    """One lazily created channel per client object, per process."""

    service = "rpc"  # for messages: "Action", "Diary"

    def __init__(self, conf: RpcClientConf) -> None:
        self.conf = conf
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._pid = 0
        self._stub: Any = None

    def _make_stub(self, channel: grpc.Channel) -> Any:
        raise NotImplementedError

    def stub(self) -> Any:
        """The stub over this process's channel, created on first use; raise SchedulerError."""
        with self._lock:
            # A channel inherited through fork is unusable in the child: make a new one.
            if self._channel is None or self._pid != os.getpid():
                self._channel = grpc.insecure_channel(resolve_target(self.conf), CHANNEL_OPTIONS)
                self._pid = os.getpid()
                self._stub = self._make_stub(self._channel)
            return self._stub

    def close(self) -> None:
        """Close the channel if this process opened one; the client may be used again."""
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel, self._stub = None, None

    def call(self, method: Callable[..., Any], request: Any, timeout_s: float | None) -> Any:
        """Invoke ``method``; map a gRPC error to ``DownstreamError`` and return the response."""
        timeout = self.conf.timeout_ms / 1000 if timeout_s is None else timeout_s
        try:
            return method(request, timeout=timeout if timeout > 0 else None, metadata=self._auth())
        except grpc.RpcError as exc:
            raise rpc_error(self.service, exc) from None

    def _auth(self) -> tuple[tuple[str, str], ...] | None:
        # go-zero's App/Token authentication travels as "app" and "token" metadata.
        if self.conf.app and self.conf.token:
            return (("app", self.conf.app), ("token", self.conf.token))
        return None

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def rpc_error(service: str, exc: grpc.RpcError) -> DownstreamError:
    """A one-sentence ``DownstreamError`` naming the gRPC status of a failed call."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or "no details"
    details = details.replace("\n", " ")[:200]
    return DownstreamError(
        f"{service} call failed with {code.name}: {details}",
        unavailable=code in _UNAVAILABLE_CODES,
    )
