"""The console's HTTP plumbing: plain request and response values, and its Unix socket server.

The app is a function from ``Request`` to ``Response`` (``App.handle``), so
tests and the benchmark call it directly; ``ConsoleServer`` puts it on the
Unix socket the supervisor's proxy connects to, one thread per request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socketserver
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlsplit

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
MAX_FORM_BYTES = 64 * 1024
# No script at all, styles from our own file only, forms post only to us, never framed.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
)

_SAFE_BACK = re.compile(r"^/console/[A-Za-z0-9/_?=&%.+-]*$")

log = logging.getLogger(__name__)


def safe_back(target: str, default: str) -> str:
    """``target`` when it is a page of the console, else ``default`` (no open redirect)."""
    return target if _SAFE_BACK.match(target) and "//" not in target else default


@dataclass(frozen=True)
class Request:
    """One request, the ``/console`` prefix already taken off ``path``."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case
    cookies: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    client: str = ""

    def header(self, name: str) -> str:
        """A header's value, "" when absent."""
        return self.headers.get(name.lower(), "")

    @property
    def wants_html(self) -> bool:
        """Whether a browser asks (it accepts HTML), rather than a script."""
        return "text/html" in self.header("Accept")


@dataclass
class Response:
    """What the app answers: a status, a body and headers."""

    status: int = 200
    body: bytes = b""
    content_type: str = HTML
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, status: int, text: str, **headers: str) -> Response:
        """A plain-text answer of one or a few lines."""
        extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
        return cls(status, text.encode(), TEXT, extra)

    @classmethod
    def redirect(cls, location: str) -> Response:
        """303 See Other to ``location`` (after a POST, the page to show)."""
        return cls(303, b"", TEXT, [("Location", location)])

    def all_headers(self) -> list[tuple[str, str]]:
        """Every header sent: content type, no caching, the security set, then our own."""
        base = [("Content-Type", self.content_type), ("Cache-Control", "no-store")]
        return base + list(SECURITY_HEADERS) + self.headers


def parse_request(
    method: str, target: str, headers: Mapping[str, str], body: bytes, prefix: str
) -> Request:
    """A ``Request`` from the raw parts; ``prefix`` is taken off the path."""
    parts = urlsplit(target)
    path = parts.path[len(prefix) :] if parts.path.startswith(prefix) else parts.path
    lowered = {name.lower(): value for name, value in headers.items()}
    form: dict[str, str] = {}
    if body and "application/x-www-form-urlencoded" in lowered.get("content-type", ""):
        form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return Request(
        method=method.upper(),
        path=path or "/",
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=lowered,
        cookies=parse_cookies(lowered.get("cookie", "")),
        form=form,
        client=lowered.get("x-forwarded-for", "local"),
    )


def parse_cookies(header: str) -> dict[str, str]:
    """The cookies of a ``Cookie`` header; a malformed header counts as none."""
    jar: SimpleCookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


Handle = Callable[[Request], Response]


class ConsoleServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The app on a Unix socket, one thread per request (only the proxy connects)."""

    daemon_threads = True

    def __init__(self, path: str, handle: Handle, prefix: str) -> None:
        """Bind ``path`` (a stale socket file is replaced), readable by this user only.

        Raises OSError when it cannot be bound.
        """
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        self.app = handle
        self.prefix = prefix
        old_umask = os.umask(0o177)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old_umask)

    def server_close(self) -> None:
        """Stop listening and remove the socket file."""
        super().server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.server_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: ConsoleServer
    protocol_version = "HTTP/1.1"
    timeout = 130  # the proxy waits 120 s for an answer

    def do_GET(self) -> None:  # the names http.server dispatches to
        self._serve(b"")

    def do_POST(self) -> None:
        raw = self.headers.get("Content-Length", "0").strip() or "0"
        length = int(raw) if raw.isdigit() else -1
        if not 0 <= length <= MAX_FORM_BYTES:
            self._write(Response.text(413, "the form is too large or has no valid length\n"))
            return
        self._serve(self.rfile.read(length) if length else b"")

    def _serve(self, body: bytes) -> None:
        request = parse_request(
            self.command, self.path, dict(self.headers), body, self.server.prefix
        )
        self._write(self.server.app(request))

    def _write(self, response: Response) -> None:
        self.close_connection = True  # one request per proxy connection
        self.send_response(response.status, HTTPStatus(response.status).phrase)
        for name, value in response.all_headers():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def address_string(self) -> str:
        """The browser's address as the proxy saw it (a Unix socket peer has none)."""
        return self.headers.get("X-Forwarded-For", "local") if self.headers else "local"

    def log_message(self, format: str, *args: object) -> None:
        """Every page view would flood the log: only at debug level (actions log their own)."""
        log.debug("console http %s " + format, self.address_string(), *args)
