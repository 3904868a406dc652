"""go-zero's app/token authentication for the Scheduler server (``Auth: true``).

Clients send gRPC metadata ``app`` and ``token``. The expected token of an
app is ``HGET <Redis.Key> <app>``: the hash named exactly ``Redis.Key``, as
go-zero reads it. The delay index's keys are ``{<Redis.Key>}:due`` and so on,
other keys, so both live in one Redis. A token read is cached for 5 minutes;
a failed read is not cached. As go-zero's ``auth.Authenticator``:

- ``app`` or ``token`` missing or empty → UNAUTHENTICATED ``app/token required``;
- the token differs → UNAUTHENTICATED ``access denied``;
- the app is unknown or Redis fails → INTERNAL with ``StrictControl``, else
  the call is allowed (logged at most once a minute).

Health checks (``grpc.health.v1.Health``) stay reachable without credentials,
so a load balancer or orchestrator needs no token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from redis.exceptions import RedisError

from me2_scheduler.config import Config
from me2_scheduler.rpc_server.handlers import HandlerInterceptor, with_behavior
from me2_scheduler.storage.redis_conn import make_redis

log = logging.getLogger("me2_scheduler.rpc")

APP_KEY, TOKEN_KEY = "app", "token"
MISSING_METADATA = "app/token required"  # go-zero's texts
ACCESS_DENIED = "access denied"
CACHE_SECONDS = 300.0  # go-zero's defaultExpiration
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_LOG_EVERY_S = 60.0


class UnknownApp(LookupError):
    """No token is stored for the app."""


class TokenStore:
    """The expected tokens, read with ``HGET <key> <app>`` and cached ``ttl_s`` seconds."""

    def __init__(
        self,
        lookup: Callable[[str], str | None],
        *,
        ttl_s: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}

    def token(self, app: str) -> str:
        """The app's token; raise ``UnknownApp``, or ``RedisError`` when the read fails."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(app)
        if cached is not None and cached[1] > now:
            return cached[0]
        value = self._lookup(app)
        if value is None:
            raise UnknownApp(app)
        with self._lock:
            self._cache[app] = (value, now + self._ttl_s)
        return value


def redis_token_store(config: Config) -> TokenStore:
    """A ``TokenStore`` over the service's Redis (hash ``Redis.Key``). Raises ``ConfigError``."""
    client = make_redis(config.redis)
    key = config.redis.key
    return TokenStore(lambda app: client.hget(key, app))  # type: ignore[return-value]


def _first(metadata: Sequence[tuple[str, Any]] | None, name: str) -> str:
    for key, value in metadata or ():
        if key == name:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


class AuthInterceptor(HandlerInterceptor):
    """Refuses calls whose ``app``/``token`` do not match, before the handler runs."""

    def __init__(self, tokens: TokenStore, *, strict: bool) -> None:
        self.tokens = tokens
        self.strict = strict
        self._last_logged = -_LOG_EVERY_S

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        denied = self.check(details.invocation_metadata)
        return handler if denied is None else _refusal(handler, *denied)

    def check(
        self, metadata: Sequence[tuple[str, Any]] | None
    ) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may go on, else the status and message to refuse it with."""
        app, token = _first(metadata, APP_KEY), _first(metadata, TOKEN_KEY)
        if not app or not token:
            return grpc.StatusCode.UNAUTHENTICATED, MISSING_METADATA
        try:
            expected = self.tokens.token(app)
        except UnknownApp:
            return self._unverifiable(f"unknown app {app!r}")
        except RedisError as exc:
            return self._unverifiable(f"token lookup failed: {type(exc).__name__}")
        if token != expected:
            return grpc.StatusCode.UNAUTHENTICATED, ACCESS_DENIED
        return None

    def _unverifiable(self, why: str) -> tuple[grpc.StatusCode, str] | None:
        if self.strict:
            return grpc.StatusCode.INTERNAL, why
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:  # a line a minute, not one per call
            self._last_logged = now
            log.error("rpc auth: %s; call allowed (StrictControl is off)", why)
        return None


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same kind as ``handler`` that ends the call with ``code``."""

    def refuse(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return with_behavior(handler, refuse)
