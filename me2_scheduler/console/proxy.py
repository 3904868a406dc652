"""The supervisor's side of the console: ``/console/`` requests handed to the console child.

The console child (role ``console``) serves HTTP on a Unix socket in the
supervisor's private metrics dir (made 0700 by ``mkdtemp``). The
supervisor's HTTP thread only copies one request and one answer between the
two with the standard library: it opens no MySQL, Redis or gRPC object, so
forking children while it runs stays as safe as it was. A socket the proxy
holds when a child is forked is only a copy of a file descriptor the child
never uses; it closes with the proxy's ``close`` as soon as the child exits.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
from http.server import BaseHTTPRequestHandler

PREFIX = "/console"
SOCKET_NAME = "console.sock"
MAX_BODY_BYTES = 64 * 1024  # forms only: an avatar id, a filter, a CSRF token
ANSWER_TIMEOUT_S = 120.0  # a Trigger waits for Action; rebuilds run in the background
TEXT = "text/plain; charset=utf-8"
# Request headers the console reads; anything else stays at the proxy.
PASSED_ON = ("Authorization", "Cookie", "Content-Type", "Accept", "Origin", "Host")
# Answer headers that describe one connection, not the answer.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)

log = logging.getLogger(__name__)


def is_console_path(path: str) -> bool:
    """Whether a request path belongs to the console."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def socket_path(metrics_dir: str) -> str:
    """Where the console child listens: a Unix socket in the supervisor's metrics dir."""
    return os.path.join(metrics_dir, SOCKET_NAME)


class UnixConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` to a Unix socket instead of a TCP port."""

    def __init__(self, path: str, timeout: float = ANSWER_TIMEOUT_S) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def forward(handler: BaseHTTPRequestHandler, metrics_dir: str) -> None:
    """Answer one ``/console`` request of ``handler`` with the console child's answer.

    Never raises: a console that is off, restarting or silent gets a one-line
    plain-text answer (404, 503, 502).
    """
    if handler.path.split("?", 1)[0] == PREFIX:
        _reply(handler, 308, PREFIX + "/\n", location=PREFIX + "/")
        return
    body = _read_body(handler)
    if body is None:
        return
    headers = {name: value for name in PASSED_ON if (value := handler.headers.get(name))}
    headers["X-Forwarded-For"] = handler.client_address[0]
    connection = UnixConnection(socket_path(metrics_dir))
    try:
        connection.request(handler.command, handler.path, body=body, headers=headers)
        answer = connection.getresponse()
        status, reason, answer_headers = answer.status, answer.reason, answer.getheaders()
        content = answer.read()
    except (FileNotFoundError, ConnectionRefusedError):
        _reply(handler, 503, "the console is not running (Console.Enabled, or starting)\n")
        return
    except (OSError, http.client.HTTPException) as exc:
        log.error("console did not answer %s %s: %s", handler.command, handler.path, exc)
        _reply(handler, 502, "the console did not answer; see the service log\n")
        return
    finally:
        connection.close()
    handler.send_response(status, reason)
    for name, value in answer_headers:
        if name.lower() not in HOP_BY_HOP:
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(content)))
    handler.end_headers()
    handler.wfile.write(content)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request body (b"" for none); None after answering a bad or oversized one."""
    raw = handler.headers.get("Content-Length", "0").strip() or "0"
    if not raw.isdigit():
        _reply(handler, 400, "Content-Length must be a number\n")
        return None
    length = int(raw)
    if length > MAX_BODY_BYTES:
        handler.close_connection = True  # the unread body must not be taken for a request
        _reply(handler, 413, f"request body over {MAX_BODY_BYTES} bytes\n")
        return None
    return handler.rfile.read(length) if length else b""


def _reply(handler: BaseHTTPRequestHandler, status: int, text: str, location: str = "") -> None:
    body = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", TEXT)
    handler.send_header("Content-Length", str(len(body)))
    if location:
        handler.send_header("Location", location)
    handler.end_headers()
    handler.wfile.write(body)
