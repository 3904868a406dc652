"""Server interceptors for the Scheduler calls: access log + metrics, and the server timeout.

Only unary ``/scheduler.Scheduler/*`` calls are intercepted; health checks
and reflection pass through untouched (and unlogged).

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
  that pool when its time is up never starts.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import grpc

from me2_scheduler import metrics

log = logging.getLogger("me2_scheduler.rpc")

SCHEDULER_PREFIX = "/scheduler.Scheduler/"
DEADLINE_MESSAGE = "context deadline exceeded"  # go-zero's text for this status

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def _scheduler_unary(details: grpc.HandlerCallDetails, handler: Any) -> bool:
    """Whether a call is a unary Scheduler call (the only ones intercepted)."""
    return (
        handler is not None
        and handler.unary_unary is not None
        and details.method.startswith(SCHEDULER_PREFIX)
    )


def _with_behavior(handler: grpc.RpcMethodHandler, behavior: Behavior) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
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


class AccessLogInterceptor(grpc.ServerInterceptor):
    """One log line and the RPC metrics per Scheduler call."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if not _scheduler_unary(handler_call_details, handler):
            return handler
        method = handler_call_details.method.removeprefix(SCHEDULER_PREFIX)
        return _with_behavior(
            handler, functools.partial(self._observe, method, handler.unary_unary)
        )

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
            log.log(
                logging.ERROR if failed else logging.INFO,
                "rpc %s%s code=%s %.1fms", method, _request_fields(request), code, elapsed * 1000,
            )  # fmt: skip


class TimeoutInterceptor(grpc.ServerInterceptor):
    """Answers ``DEADLINE_EXCEEDED`` when a handler overruns ``timeout_ms`` (0: no limit).

    Call ``close`` after the server stopped, to release the handler pool.
    """

    def __init__(self, timeout_ms: int, max_workers: int) -> None:
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self._pool = ThreadPoolExecutor(max(1, max_workers), thread_name_prefix="rpc-handler")

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if self.timeout_s is None or not _scheduler_unary(handler_call_details, handler):
            return handler
        return _with_behavior(handler, functools.partial(self._bounded, handler.unary_unary))

    def budget_s(self, context: grpc.ServicerContext) -> float:
        """Seconds the handler may take: the server timeout or the client's deadline, if sooner."""
        assert self.timeout_s is not None
        remaining = context.time_remaining()
        return self.timeout_s if remaining is None else max(0.0, min(self.timeout_s, remaining))

    def _bounded(self, behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Any:
        future = self._pool.submit(behavior, request, context)
        try:
            return future.result(timeout=self.budget_s(context))
        except FutureTimeout:
            future.cancel()  # never starts if it was still queued
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE)

    def close(self) -> None:
        """Stop the handler pool; handlers already running finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
