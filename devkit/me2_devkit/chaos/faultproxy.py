"""A TCP fault proxy: relays one port to a server and misbehaves on command.

The chaos suite puts one in front of each server the service talks to
(MariaDB, Redis, Action, etcd) and switches its phase while the service runs:

- ``normal``: relays bytes both ways as they come.
- ``latency``: holds every chunk ``delay_ms`` before passing it on.
- ``jitter``: holds every chunk ``delay_ms`` plus a random share of
  ``spread_ms``; order within a connection is kept (TCP never reorders).
- ``resets``: open connections are reset (RST) at once; a new connection is
  accepted and reset.
- ``blackhole``: open connections go silent; a new connection is accepted
  and never answered. The client's bytes are read and dropped, so its writes
  succeed and only its reads wait: a peer that vanished.
- ``half_open``: the connections open at the start of the phase go silent;
  new connections work normally.

A connection that went silent stays silent after the phase ends, as one whose
peer host was lost does: only a client that times out, pings, or gives up and
reconnects gets through again. That is what the proxy exists to test; bytes
held and delivered late would hide a missing timeout. The upstream side of a
silenced connection is closed at once, so the server rolls back what that
connection held and frees its locks, as its own timeout would: the run then
measures the service, not MariaDB's lock wait timeout.

``FaultProxy`` lives on an asyncio loop; ``ThreadedProxy`` runs one on a
thread of its own for callers that are not async (the tests);
``proxyhost`` runs several in a child process for a chaos run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

CHUNK = 64 * 1024
NORMAL, LATENCY, JITTER, RESETS, BLACKHOLE, HALF_OPEN = (
    "normal",
    "latency",
    "jitter",
    "resets",
    "blackhole",
    "half_open",
)
PHASES = (NORMAL, LATENCY, JITTER, RESETS, BLACKHOLE, HALF_OPEN)
APPLY_TIMEOUT_S = 10.0


class ProxyError(Exception):
    """A phase that does not exist, or a proxy that cannot listen."""


@dataclass(frozen=True)
class Phase:
    """What the proxy does now; ``delay_ms``/``spread_ms`` only for latency and jitter."""

    name: str = NORMAL
    delay_ms: float = 0.0
    spread_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in PHASES:
            raise ProxyError(f"unknown proxy phase {self.name!r} (one of {', '.join(PHASES)})")
        if self.delay_ms < 0 or self.spread_ms < 0:
            raise ProxyError("delay_ms and spread_ms must be >= 0")


@dataclass
class ProxyStats:
    """Counts since the proxy started (``open``: connections open now)."""

    accepted: int = 0  # client connections
    open: int = 0
    silenced: int = 0  # connections held open with nothing relayed (blackhole, half-open)
    resets: int = 0  # connections closed with an RST
    relayed_bytes: int = 0
    dropped_bytes: int = 0  # bytes read and not passed on


@dataclass(eq=False)
class _Link:
    """One client connection and, unless it was born silent, its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    silent: bool = False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a host that drops the connection does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Relays ``host:port`` (0: a free port) to ``target`` (host:port), in ``phase``."""

    def __init__(self, target: str, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0):
        target_host, _, target_port = target.rpartition(":")
        if not target_host or not target_port.isdigit():
            raise ProxyError(f"proxy target {target!r} is not host:port")
        self.target = (target_host, int(target_port))
        self.host, self.port = host, port
        self.phase = Phase()
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        """Listen. Raises ProxyError when the port cannot be bound."""
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
        except OSError as exc:
            raise ProxyError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            self._drop(link, reset=True)

    def apply(self, phase: Phase) -> None:
        """Enter ``phase`` now (on the loop's thread); see the module docstring."""
        self.phase = phase
        if phase.name == RESETS:
            for link in list(self._links):
                self._drop(link, reset=True)
        elif phase.name in (BLACKHOLE, HALF_OPEN):
            for link in list(self._links):
                self._silence(link)

    # -- connections ------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        phase = self.phase.name
        if phase == RESETS:
            self.stats.resets += 1
            _reset(writer)
            return
        link = _Link(writer)
        if phase == BLACKHOLE:
            link.silent = True
            self.stats.silenced += 1
            self._keep(link)
            await self._pump(link, reader, None, from_client=True)
            return
        try:
            up_reader, link.upstream = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)  # the server is down: the client sees a reset, not a hang
            return
        self._keep(link)
        back = asyncio.ensure_future(self._pump(link, up_reader, writer, from_client=False))
        await self._pump(link, reader, link.upstream, from_client=True)
        await asyncio.gather(back, return_exceptions=True)

    def _keep(self, link: _Link) -> None:
        self._links.add(link)
        self.stats.open = len(self._links)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        from_client: bool,
    ) -> None:
        """Read until the end, passing each chunk on after the phase's delay, in order.

        The end of either side ends the link, except that a silent link ends
        only when its client gives up (its upstream side was closed on purpose).
        """
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(link, queue, writer))
        loop, last_due = asyncio.get_running_loop(), 0.0
        try:
            while chunk := await reader.read(CHUNK):
                if link.silent or writer is None:
                    self.stats.dropped_bytes += len(chunk)
                    continue
                last_due = max(loop.time() + self._delay_s(), last_due)
                queue.put_nowait((last_due, chunk))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            queue.put_nowait(None)
            await asyncio.gather(sender, return_exceptions=True)
            if from_client or not link.silent:
                self._drop(link, reset=False)

    async def _send(
        self,
        link: _Link,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, chunk = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if link.silent or writer is None or writer.is_closing():
                self.stats.dropped_bytes += len(chunk)
                continue
            writer.write(chunk)
            self.stats.relayed_bytes += len(chunk)
            with contextlib.suppress(OSError):
                await writer.drain()

    def _delay_s(self) -> float:
        phase = self.phase
        if phase.name == LATENCY:
            return phase.delay_ms / 1000
        if phase.name == JITTER:
            return (phase.delay_ms + self._rng.random() * phase.spread_ms) / 1000
        return 0.0

    def _silence(self, link: _Link) -> None:
        if link.silent:
            return
        link.silent = True
        self.stats.silenced += 1
        if link.upstream is not None:
            link.upstream.transport.close()

    def _drop(self, link: _Link, *, reset: bool) -> None:
        """Close both sides of ``link`` (with an RST when ``reset``) and forget it."""
        if link not in self._links and link.client.is_closing():
            return
        self._links.discard(link)
        self.stats.open = len(self._links)
        if reset:
            self.stats.resets += 1
        for writer in (link.client, link.upstream):
            if writer is not None and not writer.is_closing():
                _reset(writer) if reset else writer.transport.close()


class ThreadedProxy:
    """A ``FaultProxy`` on its own loop and thread, driven from ordinary code."""

    def __init__(self, target: str, **options: Any) -> None:
        self._proxy = FaultProxy(target, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )

    @property
    def address(self) -> str:
        return self._proxy.address

    @property
    def stats(self) -> ProxyStats:
        return self._run(self._copy_stats())

    def start(self) -> ThreadedProxy:
        """Listen on a free port. Raises ProxyError."""
        self._thread.start()
        self._run(self._proxy.start())
        return self

    def set_phase(self, name: str, delay_ms: float = 0.0, spread_ms: float = 0.0) -> None:
        """Enter a phase; returns once it applies. Raises ProxyError for an unknown one."""
        phase = Phase(name, delay_ms, spread_ms)
        self._run(self._apply(phase))

    def stop(self) -> None:
        """Close every connection and end the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._run(self._proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _apply(self, phase: Phase) -> None:
        self._proxy.apply(phase)

    async def _copy_stats(self) -> ProxyStats:
        return ProxyStats(**vars(self._proxy.stats))

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=APPLY_TIMEOUT_S)
