"""Who is asking: HTTP basic, a bearer token, or the session cookie a login form sets.

Every page and every action needs one of them; there is no default
password (config refuses an enabled console without one). Secrets are
compared with ``hmac.compare_digest``.

Sessions are stateless: the cookie holds the user, its expiry and a random
nonce, signed with HMAC-SHA256 under a key derived from the configured
credentials. So a session survives a restart of the console child and works
on every host with the same config, and changing the password or token
ends every session. The nonce binds the session's CSRF token (``csrf``).

Failed logins are limited per console process (``FAILURES_PER_MINUTE``),
which keeps a password guesser to a crawl.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from me2_scheduler.config import ConsoleConf
from me2_scheduler.console.web import Request

SESSION_COOKIE = "me2_console"
SESSION_SECONDS = 12 * 3600
FAILURES_PER_MINUTE = 20
TOKEN_OPERATOR = "token"  # the operator name of a bearer-token caller
REALM = 'Basic realm="me2-scheduler console", charset="UTF-8"'


@dataclass(frozen=True)
class Operator:
    """An authenticated caller: its name (for the access log) and what its CSRF token binds."""

    name: str
    via: str  # session | basic | token
    binding: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Checks credentials and signs sessions for one ``ConsoleConf``."""

    def __init__(self, conf: ConsoleConf, clock: Callable[[], float] = time.time) -> None:
        self.conf = conf
        self._clock = clock
        material = "\0".join(("me2-console", conf.user, conf.password, conf.token))
        self.key = hashlib.sha256(material.encode()).digest()
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()

    # -- credentials ---------------------------------------------------------

    def password_ok(self, user: str, password: str) -> bool:
        """Whether ``user``/``password`` are the configured ones (never with no password set)."""
        if not self.conf.password:
            return False
        same_user = hmac.compare_digest(user.encode(), self.conf.user.encode())
        same_password = hmac.compare_digest(password.encode(), self.conf.password.encode())
        return same_user and same_password

    def token_ok(self, token: str) -> bool:
        """Whether ``token`` is the configured bearer token (never with no token set)."""
        return bool(self.conf.token) and hmac.compare_digest(
            token.encode(), self.conf.token.encode()
        )

    def from_header(self, value: str) -> Operator | None:
        """The operator an ``Authorization`` header proves, else None."""
        scheme, _, credentials = value.strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer" and self.token_ok(credentials):
            return Operator(TOKEN_OPERATOR, "token", "token")
        if scheme != "basic":
            return None
        try:
            user, _, password = _unb64(credentials).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if self.password_ok(user, password):
            return Operator(user, "basic", "basic\0" + user)
        return None

    def identify(self, request: Request) -> Operator | None:
        """The operator behind ``request``: its Authorization header, else its session."""
        header = request.header("Authorization")
        if header:
            return self.from_header(header)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return self.session_operator(cookie) if cookie else None

    # -- sessions ------------------------------------------------------------

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def new_session(self, user: str) -> str:
        """A signed session cookie value for ``user``, valid ``SESSION_SECONDS``."""
        expires = int(self._clock()) + SESSION_SECONDS
        payload = f"{_b64(user.encode())}.{expires}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def session_operator(self, value: str) -> Operator | None:
        """The operator of a session cookie, None when forged, expired or for another user."""
        payload, _, signature = value.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        user_part, expires, nonce = [*payload.split("."), "", "", ""][:3]
        try:
            user = _unb64(user_part).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not expires.isdigit() or int(expires) < self._clock() or user != self.conf.user:
            return None
        return Operator(user, "session", "session\0" + nonce)

    def session_cookie(self, value: str, max_age: int = SESSION_SECONDS) -> str:
        """The ``Set-Cookie`` value: script cannot read it, other sites never send it."""
        return (
            f"{SESSION_COOKIE}={value}; Path=/console/; Max-Age={max_age}; HttpOnly;"
            " SameSite=Strict"
        )

    # -- failures ------------------------------------------------------------

    def throttled(self) -> bool:
        """Whether too many logins failed in the last minute (then none is checked)."""
        with self._lock:
            self._forget_old()
            return len(self._failures) >= FAILURES_PER_MINUTE

    def failed(self) -> None:
        """Count one failed login."""
        with self._lock:
            self._failures.append(self._clock())
            self._forget_old()

    def _forget_old(self) -> None:
        while self._failures and self._failures[0] < self._clock() - 60:
            self._failures.popleft()
