"""A TCP proxy on loopback that can turn into a blackhole: it accepts, and never answers.

``BlackholeProxy(upstream_port)`` forwards every connection to the upstream
server until ``blackhole()``: from then on bytes already flowing are held
(not delivered, not refused) and new connections are accepted and left
silent, which is what a partitioned network or a frozen server looks like to
a client. ``heal()`` delivers what was held and forwards again; connections
accepted during the blackhole stay silent for good (their clients have given
up by then). With ``upstream_port=None`` it is a blackhole from the start,
with nothing behind it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

CHUNK = 65536


class BlackholeProxy:
    """A forwarding proxy on ``127.0.0.1:<port>`` that can go silent (module doc)."""

    def __init__(self, upstream_port: int | None) -> None:
        self.upstream_port = upstream_port
        self._open = threading.Event()
        if upstream_port is not None:
            self._open.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0  # connections accepted so far
        threading.Thread(target=self._accept_loop, name="blackhole-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        """Stop answering: hold the bytes in flight, accept new connections silently."""
        self._open.clear()

    def heal(self) -> None:
        """Forward again (only connections accepted while forwarding)."""
        self._open.set()

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._open.set()  # let held pumps run into the closed sockets and end
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._keep(client)
            self.accepted += 1
            if self.upstream_port is None or not self._open.is_set():
                continue  # accepted, and never answered
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 5)
            except OSError:
                client.close()
                continue
            self._keep(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst``; while blackholed, hold what was read until healed."""
        try:
            for chunk in _chunks(src):
                self._open.wait()
                dst.sendall(chunk)
            self._open.wait()
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while chunk := sock.recv(CHUNK):
        yield chunk


@contextlib.contextmanager
def blackhole_proxy(upstream_port: int | None) -> Iterator[BlackholeProxy]:
    """A ``BlackholeProxy`` closed on the way out."""
    proxy = BlackholeProxy(upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()
