"""The supervisor's listener hands ``/console/`` to the console child's Unix socket.

A real ``StatusServer`` (the supervisor's HTTP thread) and a real
``ConsoleServer`` on the socket in its metrics dir, with an app that echoes
what it was given: the relay passes the method, path, form and the headers
the console reads, adds the browser's address, and returns status, cookies
and the security headers. No console: a plain 503, never a hang.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from me2_devkit.testing.servers import free_port
from me2_scheduler.config import ConsoleConf, PrometheusConf
from me2_scheduler.console.proxy import MAX_BODY_BYTES, socket_path
from me2_scheduler.console.web import ConsoleServer, Request, Response
from me2_scheduler.supervisor.http import Listener, StatusServer, SupervisorMetrics


def echo(request: Request) -> Response:
    seen = {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "form": dict(request.form),
        "headers": dict(request.headers),
        "client": request.client,
    }
    answer = Response(201, json.dumps(seen).encode(), "application/json")
    answer.headers.append(("Set-Cookie", "a=b; Path=/console/; HttpOnly"))
    return answer


@pytest.fixture
def metrics_dir() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="me2-proxy-"))  # short: a socket path has ~100 bytes
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def listener(metrics_dir: Path) -> Iterator[int]:
    conf = PrometheusConf(host="127.0.0.1", port=free_port())
    server = StatusServer(Listener.for_metrics(conf), str(metrics_dir), list)
    yield server.port
    server.close()


@pytest.fixture
def console_socket(metrics_dir: Path) -> Iterator[str]:
    path = socket_path(str(metrics_dir))
    server = ConsoleServer(path, echo, "/console")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()
    thread.join(5)


def request(
    port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def test_a_get_reaches_the_console_with_only_the_headers_it_reads(
    listener: int, console_socket: str
) -> None:
    headers = {"Authorization": "Basic eDp5", "Cookie": "me2_console=s", "X-Other": "kept back"}
    status, answer_headers, body = request(
        listener, "GET", "/console/paused?reason=user", headers=headers
    )
    assert status == 201
    seen = json.loads(body)
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/paused", {"reason": "user"})
    assert seen["headers"]["authorization"] == "Basic eDp5"
    assert seen["headers"]["cookie"] == "me2_console=s"
    assert "x-other" not in seen["headers"]
    assert seen["client"] == "127.0.0.1"
    assert answer_headers["Set-Cookie"] == "a=b; Path=/console/; HttpOnly"
    assert "default-src 'none'" in answer_headers["Content-Security-Policy"]
    assert answer_headers["Cache-Control"] == "no-store"


def test_a_post_carries_its_form_and_other_paths_refuse_posts(
    listener: int, console_socket: str
) -> None:
    form = b"csrf=abc&back=%2Fconsole%2Fpaused"
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = request(listener, "POST", "/console/avatars/5/resume", form, form_type)
    assert status == 201
    assert json.loads(body)["form"] == {"csrf": "abc", "back": "/console/paused"}
    assert request(listener, "POST", "/metrics", b"x=1")[0] == 405
    too_big = b"x" * (MAX_BODY_BYTES + 1)
    assert request(listener, "POST", "/console/avatars/5/resume", too_big)[0] == 413


def test_the_bare_prefix_redirects_and_metrics_stay_where_they_were(
    listener: int, console_socket: str
) -> None:
    status, headers, _ = request(listener, "GET", "/console")
    assert (status, headers["Location"]) == (308, "/console/")
    assert request(listener, "GET", "/healthz")[:1] == (200,)
    assert request(listener, "GET", "/consoles")[0] == 404


def test_the_socket_is_private_to_the_service_user(console_socket: str) -> None:
    mode = os.stat(console_socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o077 == 0


def test_without_a_console_the_listener_answers_503_at_once(
    listener: int, metrics_dir: Path
) -> None:
    status, _, body = request(listener, "GET", "/console/")
    assert status == 503
    assert body.decode() == "the console is not running (Console.Enabled, or starting)\n"
    stale = socket_path(str(metrics_dir))  # the socket file of a killed console child
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(stale)
    assert request(listener, "GET", "/console/")[0] == 503
    server = ConsoleServer(stale, echo, "/console")  # the next child takes its place
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert request(listener, "GET", "/console/")[0] == 201
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_console_with_its_own_listener_is_served_there_and_only_there(
    metrics_dir: Path, console_socket: str
) -> None:
    prometheus = PrometheusConf(host="127.0.0.1", port=free_port())
    console = ConsoleConf(enabled=True, token="t" * 20, host="127.0.0.1", port=free_port())
    observer = SupervisorMetrics(str(metrics_dir))
    assert observer.start(prometheus, ["worker"], list, console)
    try:
        assert request(console.port, "GET", "/console/paused")[0] == 201  # relayed
        assert request(console.port, "POST", "/console/avatars/5/resume", b"csrf=a")[0] == 201
        status, _, body = request(console.port, "GET", "/metrics")
        assert (status, body) == (404, b"not found: /metrics; this listener serves /console/\n")
        assert request(console.port, "GET", "/healthz")[0] == 404
        assert request(prometheus.port, "GET", "/healthz")[0] == 200
        assert request(prometheus.port, "GET", "/console/paused")[0] == 404  # not here
    finally:
        observer.close()


def test_a_taken_console_port_stops_the_start_and_frees_the_metrics_port(
    metrics_dir: Path, listener: int
) -> None:
    prometheus = PrometheusConf(host="127.0.0.1", port=free_port())
    console = ConsoleConf(enabled=True, token="t" * 20, host="127.0.0.1", port=listener)
    observer = SupervisorMetrics(str(metrics_dir))
    assert observer.start(prometheus, ["worker"], list, console) is False
    assert observer.servers == []
    with socket.create_server(("127.0.0.1", prometheus.port)):  # released again
        pass
