"""A TCP relay in front of the Action simulator that can be shut, so Action looks down.

Shut, the gate stops listening (a new connection is refused) and cuts every
open connection (a call in flight ends UNAVAILABLE), exactly what the
scheduler sees when the Action service's host goes away; opened again, it
listens on the same port, so the scheduler's channel reconnects on its own.
The simulator behind it keeps running, so its per-key counts cover the whole
run: stopping the simulator itself would lose them.

The relay runs an asyncio loop on its own thread; ``shut`` and ``open`` wait
until the loop has done them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future

CHUNK = 64 * 1024


class Gate:
    """Relays ``127.0.0.1:<port>`` to ``target`` (host:port) until shut."""

    def __init__(self, target: str, host: str = "127.0.0.1") -> None:
        target_host, _, target_port = target.rpartition(":")
        self._target = (target_host, int(target_port))
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chaos-gate", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Gate:
        """Listen on a free port and relay. Raises OSError when it cannot listen."""
        self._thread.start()
        self._run(self._listen())
        return self

    def shut(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._run(self._shut())

    def open(self) -> None:
        """Listen again on the same port. Raises OSError when the port was taken meanwhile."""
        self._run(self._listen())

    def stop(self) -> None:
        """Shut and end the relay's thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.shut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self, coroutine: object) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        future.result(timeout=10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._relay, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connection from here on
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as a host that went away
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for one in (writer, up_writer):
                self._writers.discard(one)
                one.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends; then end the other (an abort already ended both)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    writer.transport.abort()
