"""``host:port`` lists as one static gRPC target (``ipv4:a:p,b:p``), host names resolved now."""

from __future__ import annotations

import ipaddress
import socket

from me2_scheduler.errors import SchedulerError


def address_list_target(endpoints: tuple[str, ...]) -> str:
    """``ipv4:a:p,b:p`` (or ``ipv6:[a]:p,...``) for host:port endpoints; raise SchedulerError.

    One target holds one address family; IPv4 wins (``localhost`` has both).
    """
    if not endpoints:
        raise SchedulerError("direct target names no endpoint")
    v4: list[str] = []
    v6: list[str] = []
    for endpoint in endpoints:
        host, port = split_host_port(endpoint.strip())
        for address in _addresses(host, port):
            is_v4 = ipaddress.ip_address(address).version == 4
            (v4 if is_v4 else v6).append(f"{address}:{port}" if is_v4 else f"[{address}]:{port}")
    if v4:
        return "ipv4:" + ",".join(dict.fromkeys(v4))
    return "ipv6:" + ",".join(dict.fromkeys(v6))


def split_host_port(endpoint: str) -> tuple[str, int]:
    """``("host", port)`` from ``host:port`` or ``[v6]:port``; raise SchedulerError."""
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
