"""The chaos suite's fault proxy, phase by phase, on real sockets.

An echo server stands behind the proxy; a client connects through it. Each
phase is shown doing what it exists for (a delay, a reset, a silence that
outlives the phase) and not more (new connections work after it, bytes keep
their order under jitter). The proxy host, the child process a chaos run
drives, is shown relaying and switching phases too.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from me2_devkit.chaos import faultproxy
from me2_devkit.chaos.faultproxy import Phase, ProxyError, ThreadedProxy
from me2_devkit.chaos.proxyhost import ProxyHost

from .support import wait_until

READ_S = 5.0  # a read that should get its answer gets it well within this
SILENT_S = 0.6  # a read that should get nothing is given this long to prove it


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.opened += 1
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass
        with server.lock:
            server.closed += 1


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.opened = self.closed = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[ThreadedProxy]:
    running = ThreadedProxy(echo.address, seed=3).start()
    yield running
    running.stop()


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=READ_S)
    sock.settimeout(READ_S)
    return sock


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` and read back as many bytes."""
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def answers_nothing(sock: socket.socket) -> bool:
    """True when a message sent on ``sock`` gets no byte back within SILENT_S."""
    sock.sendall(b"anyone there?")
    sock.settimeout(SILENT_S)
    try:
        sock.recv(1)  # a byte or the end: either is an answer
    except TimeoutError:
        return True
    finally:
        sock.settimeout(READ_S)
    return False


def is_reset(sock: socket.socket) -> bool:
    """True when the next exchange on ``sock`` fails with a reset."""
    try:
        sock.sendall(b"ping")
        sock.recv(1)
    except ConnectionResetError:
        return True
    return False


def new_connection_is_reset(address: str) -> bool:
    """True when a new connection is reset, while connecting or at its first exchange."""
    try:
        sock = connect(address)
    except ConnectionResetError:
        return True  # the reset overtook the end of the handshake
    with sock:
        return is_reset(sock)


def test_normal_relays_both_ways(proxy: ThreadedProxy) -> None:
    with connect(proxy.address) as sock:
        payload = bytes(range(256)) * 1000
        assert round_trip(sock, payload) == payload
    assert proxy.stats.relayed_bytes >= 2 * len(payload)


def test_latency_holds_every_chunk_at_least_its_delay(proxy: ThreadedProxy) -> None:
    with connect(proxy.address) as sock:
        proxy.set_phase(faultproxy.LATENCY, delay_ms=150)
        started = time.monotonic()
        assert round_trip(sock, b"slow") == b"slow"
        # Held once on the way in and once on the way back.
        assert time.monotonic() - started >= 0.3


def test_jitter_keeps_the_order_of_bytes(proxy: ThreadedProxy) -> None:
    proxy.set_phase(faultproxy.JITTER, delay_ms=1, spread_ms=20)
    with connect(proxy.address) as sock:
        for i in range(30):
            sock.sendall(f"<{i}>".encode())
        expected = "".join(f"<{i}>" for i in range(30)).encode()
        got = b""
        while len(got) < len(expected):
            got += sock.recv(65536)
        assert got == expected


def test_resets_cut_open_connections_and_reset_new_ones(proxy: ThreadedProxy) -> None:
    with connect(proxy.address) as before:
        assert round_trip(before, b"hi") == b"hi"
        proxy.set_phase(faultproxy.RESETS)
        assert is_reset(before)
    assert new_connection_is_reset(proxy.address)
    proxy.set_phase(faultproxy.NORMAL)
    with connect(proxy.address) as after:
        assert round_trip(after, b"back") == b"back"


def test_a_blackhole_accepts_and_never_answers_and_its_silence_outlives_it(
    proxy: ThreadedProxy, echo: EchoServer
) -> None:
    with connect(proxy.address) as before:
        assert round_trip(before, b"hi") == b"hi"
        proxy.set_phase(faultproxy.BLACKHOLE)
        with connect(proxy.address) as during:  # the connection is accepted
            assert answers_nothing(during)
        assert answers_nothing(before)
        # The server saw its side closed, so it holds nothing for the silent client.
        wait_until(lambda: echo.closed >= 1, READ_S, "the upstream side to be closed")
        proxy.set_phase(faultproxy.NORMAL)
        assert answers_nothing(before)  # still silent: only a reconnect gets through
    with connect(proxy.address) as after:
        assert round_trip(after, b"back") == b"back"


def test_half_open_silences_the_open_connections_only(proxy: ThreadedProxy) -> None:
    with connect(proxy.address) as old:
        assert round_trip(old, b"hi") == b"hi"
        proxy.set_phase(faultproxy.HALF_OPEN)
        with connect(proxy.address) as new:
            assert round_trip(new, b"fresh") == b"fresh"
        assert answers_nothing(old)
    assert proxy.stats.silenced == 1


def test_a_server_that_is_down_is_seen_as_a_reset_not_a_hang(echo: EchoServer) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        nothing_there = f"127.0.0.1:{spare.getsockname()[1]}"  # bound, never listening
        proxy = ThreadedProxy(nothing_there).start()
        try:
            assert new_connection_is_reset(proxy.address)
        finally:
            proxy.stop()


def test_an_unknown_phase_or_target_is_refused_in_one_sentence() -> None:
    with pytest.raises(ProxyError, match="unknown proxy phase 'flaky'"):
        Phase("flaky")
    with pytest.raises(ProxyError, match="not host:port"):
        ThreadedProxy("localhost")


def test_the_proxy_host_process_relays_and_switches_phases(echo: EchoServer) -> None:
    with ProxyHost({"echo": echo.address}, seed=1) as host:
        address = host.addresses["echo"]
        with connect(address) as old:
            assert round_trip(old, b"hi") == b"hi"
            host.set_phase("echo", faultproxy.HALF_OPEN)
            assert answers_nothing(old)
        with connect(address) as new:
            assert round_trip(new, b"fresh") == b"fresh"
        with pytest.raises(ProxyError, match="no proxy named 'nope'"):
            host.set_phase("nope", faultproxy.NORMAL)
        assert host.stats("echo")["silenced"] == 1
