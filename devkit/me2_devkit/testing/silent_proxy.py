"""A TCP proxy whose existing connections can go silent while new ones still work.

It models the fault seen in production: a middlebox (NAT, conntrack, a load
balancer) forgets the connections it carried, so the client's established
TCP connections stop answering without being closed, while a freshly opened
connection reaches the server as before. Nothing is refused and nothing is
reset: bytes sent on a silent connection are read and dropped, so the client
sees only missing answers (its calls run into their deadlines).

``silence_existing`` silences every connection open now; ``hold_new(True)``
makes connections accepted from then on silent from the start (a complete
blackhole), ``hold_new(False)`` lets new ones through again. A silent
connection stays silent until the client closes it. Threads only, one pair
per connection; started and stopped by the test that owns it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

CHUNK = 65536
ACCEPT_POLL_S = 0.2


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's socket, the upstream socket, and its state."""

    number: int  # 1 for the first connection accepted, and so on
    client: socket.socket
    upstream: socket.socket | None
    silent: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class SilentProxy:
    """Proxies ``127.0.0.1:<port>`` to ``upstream`` (``host:port``)."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        up_host, _, up_port = upstream.rpartition(":")
        self._upstream = (up_host, int(up_port))
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(ACCEPT_POLL_S)
        self._host = host
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._hold_new = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="silent-proxy", daemon=True)
        self.accepted = 0

    @property
    def address(self) -> str:
        """``host:port`` clients dial."""
        return f"{self._host}:{self._listener.getsockname()[1]}"

    def start(self) -> SilentProxy:
        """Start accepting; returns self."""
        self._thread.start()
        return self

    def silence_existing(self) -> int:
        """Make every open connection silent for good; return how many there were."""
        with self._lock:
            live = [link for link in self._links if not link.closed.is_set()]
        for link in live:
            link.silent.set()
        return len(live)

    def hold_new(self, hold: bool) -> None:
        """Accept new connections silently (True) or proxy them again (False)."""
        with self._lock:
            self._hold_new = hold

    def live_connections(self) -> tuple[int, int]:
        """``(answering, silent)`` connections open now."""
        with self._lock:
            live = [link for link in self._links if not link.closed.is_set()]
        silent = sum(link.silent.is_set() for link in live)
        return len(live) - silent, silent

    def open_numbers(self) -> set[int]:
        """The numbers (1 = the first accepted) of the connections open now."""
        with self._lock:
            return {link.number for link in self._links if not link.closed.is_set()}

    def stop(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._open(client)

    def _open(self, client: socket.socket) -> None:
        client.settimeout(None)
        with self._lock:
            hold = self._hold_new
            self.accepted += 1
            number = self.accepted
        upstream = None
        if not hold:
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # upstream down: the client sees a refused connection
                return
        link = _Link(number, client, upstream)
        if hold:
            link.silent.set()
        with self._lock:
            self._links.append(link)
        threading.Thread(target=self._pump, args=(link, client, upstream), daemon=True).start()
        if upstream is not None:
            threading.Thread(target=self._pump, args=(link, upstream, client), daemon=True).start()

    @staticmethod
    def _pump(link: _Link, source: socket.socket, sink: socket.socket | None) -> None:
        """Copy ``source`` to ``sink`` until either closes; drop the bytes once silent."""
        try:
            while data := source.recv(CHUNK):
                if sink is not None and not link.silent.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            link.close()
