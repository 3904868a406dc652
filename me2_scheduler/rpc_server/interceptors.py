"""Server interceptors: grpc-go's wire answers, access log + metrics, and the server timeout.

- ``GuardInterceptor``, the outermost, does what grpc-go does before any
  interceptor runs. An unknown method is answered UNIMPLEMENTED ``unknown
  service X`` or ``unknown method M for service S`` (grpc-python's own text
  is ``Method not found!``). A request that does not parse is answered
  INTERNAL ``grpc: error unmarshalling request: ...`` and logged on one line
  with the method and the peer; grpc-python would log a traceback per bad
  message, which a client could use to flood the log (and, for a streamed
  request, may leave the call unfinished so that ``server.stop`` never returns).

The others intercept only unary ``/scheduler.Scheduler/*`` calls; health
checks and reflection pass through untouched (and unlogged).

- ``AccessLogInterceptor`` writes one line per call,
  ``rpc EnableAvatarSchedule avatar_id=42 code=0 1.8ms``, where ``code`` is
  the response's ``code`` or, for a call that ended with a gRPC status, the
  status name (``DEADLINE_EXCEEDED``); and feeds ``RPC_REQUESTS{method,code}``
  and ``RPC_DURATION{method}``.
- ``TimeoutInterceptor`` is go-zero's ``UnaryTimeoutInterceptor``: the handler
  gets ``Timeout`` ms (or the client's deadline, if sooner); when it overruns,
  the client is answered ``DEADLINE_EXCEEDED`` at once and the handler is left
  to finish in the background, as a Go handler goroutine is. Handlers run on
  a pool of their own so the wait can be bounded; a call still queued for
  that pool when its time is up never starts. The time counts from the
  call's arrival: a handler that waited in the queue gets for its MySQL and
  Redis I/O only what is left (``deadline``), so it can still answer 503 in
  time while earlier handlers hang on a silent server.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NoReturn

import grpc

from me2_scheduler import deadline, metrics
from me2_scheduler.rpc_server.answers import io_budget_s
from me2_scheduler.rpc_server.handlers import (
    Behavior,
    HandlerInterceptor,
    behavior_of,
    with_behavior,
)

log = logging.getLogger("me2_scheduler.rpc")

SCHEDULER_PREFIX = "/scheduler.Scheduler/"
DEADLINE_MESSAGE = "context deadline exceeded"  # go-zero's text for this status
UNMARSHAL_MESSAGE = "grpc: error unmarshalling request: "  # grpc-go's, before the error


def _scheduler_unary(details: grpc.HandlerCallDetails, handler: Any) -> bool:
    """Whether a call is a unary Scheduler call (the only ones intercepted)."""
    return (
        handler is not None
        and handler.unary_unary is not None
        and details.method.startswith(SCHEDULER_PREFIX)
    )


def _request_fields(request: Any) -> str:
    """What the log line says about the request: its avatar_id, or how many ids it holds."""
    fields = request.DESCRIPTOR.fields_by_name
    if "avatar_id" in fields:
        return f" avatar_id={request.avatar_id}"
    if "avatar_ids" in fields:
        return f" avatar_ids={len(request.avatar_ids)}"
    return ""


def _status_name(context: grpc.ServicerContext) -> str:
    """The gRPC status a failed call ended with (UNKNOWN when the handler just raised)."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _printable(text: str) -> str:
    """``text`` as it is when printable, else quoted with escapes (a log line stays one line)."""
    return text if text.isprintable() else json.dumps(text)


def _one_line(exc: BaseException) -> str:
    """An exception in one short line: its message, else its type."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def unknown_method_message(path: str, services: Iterable[str]) -> str:
    """grpc-go's UNIMPLEMENTED text for a call to ``path`` that no handler serves."""
    name = path.removeprefix("/")
    service, slash, method = name.rpartition("/")
    if not slash:
        return f"malformed method name: {json.dumps(path)}"
    if service in services:
        return f"unknown method {method} for service {service}"
    return f"unknown service {service}"


class GuardInterceptor(HandlerInterceptor):
    """Unknown methods and unparsable requests answered as grpc-go answers them (module doc).

    ``services`` are the services the server registers: a call to one of them
    names an unknown method, to any other an unknown service.
    """

    def __init__(self, services: Iterable[str]) -> None:
        self.services = frozenset(services)

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        method = details.method
        if handler is None:
            return _unknown_method(method, unknown_method_message(method, self.services))
        if handler.request_deserializer is None:
            return handler
        return _parsing_here(method, handler)


def _unknown_method(method: str, message: str) -> grpc.RpcMethodHandler:
    """A handler that refuses any kind of call without reading its request."""

    def refuse(requests: Any, context: grpc.ServicerContext) -> Any:
        log.warning("rpc %s peer=%s code=UNIMPLEMENTED", _printable(method), context.peer())
        context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return grpc.stream_stream_rpc_method_handler(refuse)  # no deserializer: bytes stay bytes


def _parsing_here(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` taking raw request bytes and parsing them itself (module doc)."""
    behavior, parse = behavior_of(handler), handler.request_deserializer

    def parsed(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return parse(raw)
        except Exception as exc:  # whatever the parser raises, the bytes are the client's
            _refuse_unparsable(method, context, exc)

    def one(raw: bytes, context: grpc.ServicerContext) -> Any:
        return behavior(parsed(raw, context), context)

    def stream(raws: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        return behavior((parsed(raw, context) for raw in raws), context)

    return with_behavior(handler, stream if handler.request_streaming else one, parsed=False)


def _refuse_unparsable(method: str, context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """One log line and a count, then INTERNAL with grpc-go's text; raises (abort)."""
    name = method.removeprefix(SCHEDULER_PREFIX)
    if name != method:
        metrics.RPC_REQUESTS.labels(method=name, code="INTERNAL").inc()
    reason = _one_line(exc)
    log.warning(
        "rpc %s peer=%s code=INTERNAL request does not parse: %s", name, context.peer(), reason
    )
    context.abort(grpc.StatusCode.INTERNAL, UNMARSHAL_MESSAGE + reason)


class AccessLogInterceptor(HandlerInterceptor):
    """One log line and the RPC metrics per Scheduler call."""

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        if not _scheduler_unary(details, handler):
            return handler
        method = details.method.removeprefix(SCHEDULER_PREFIX)
        return with_behavior(handler, functools.partial(self._observe, method, handler.unary_unary))

    @staticmethod
    def _observe(
        method: str, behavior: Behavior, request: Any, context: grpc.ServicerContext
    ) -> Any:
        began = time.perf_counter()
        code = "UNKNOWN"
        try:
            response = behavior(request, context)
            code = str(getattr(response, "code", 0))
            return response
        except Exception:
            code = _status_name(context)
            raise
        finally:
            elapsed = time.perf_counter() - began
            metrics.RPC_REQUESTS.labels(method=method, code=code).inc()
            metrics.RPC_DURATION.labels(method=method).observe(elapsed)
            failed = not code.isdigit() or int(code) >= 500
            level = logging.ERROR if failed else logging.INFO
            fields = _request_fields(request)
            log.log(level, "rpc %s%s code=%s %.1fms", method, fields, code, elapsed * 1000)


class TimeoutInterceptor(HandlerInterceptor):
    """Answers ``DEADLINE_EXCEEDED`` when a handler overruns ``timeout_ms`` (0: no limit).

    Call ``close`` after the server stopped, to release the handler pool.
    """

    def __init__(self, timeout_ms: int, max_workers: int) -> None:
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self._pool = ThreadPoolExecutor(max(1, max_workers), thread_name_prefix="rpc-handler")

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        if self.timeout_s is None or not _scheduler_unary(details, handler):
            return handler
        return with_behavior(handler, functools.partial(self._bounded, handler.unary_unary))

    def budget_s(self, context: grpc.ServicerContext) -> float:
        """Seconds the handler may take: the server timeout or the client's deadline, if sooner."""
        assert self.timeout_s is not None
        remaining = context.time_remaining()
        return self.timeout_s if remaining is None else max(0.0, min(self.timeout_s, remaining))

    def _bounded(self, behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Any:
        budget_s = self.budget_s(context)
        until = time.monotonic() + budget_s
        future = self._pool.submit(_run_until, until, behavior, request, context)
        try:
            return future.result(timeout=budget_s)
        except FutureTimeout:
            future.cancel()  # never starts if it was still queued
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE)

    def close(self) -> None:
        """Stop the handler pool; handlers already running finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _run_until(
    until: float, behavior: Behavior, request: Any, context: grpc.ServicerContext
) -> Any:
    """Run a handler whose I/O must end in time to answer before ``until`` (monotonic)."""
    with deadline.within(io_budget_s(until - time.monotonic(), 0)):
        return behavior(request, context)
