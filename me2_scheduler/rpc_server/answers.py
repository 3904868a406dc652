"""How a Scheduler handler answers: a code and one sentence, never a raised error.

``answers`` wraps each handler of the servicer; ``Refused`` is raised
anywhere inside one for a non-zero code. Driver errors become 503, other
errors of the package 500, anything else 500 with its traceback logged.

A handler's MySQL and Redis I/O runs under a deadline (``io_budget_s``): the
call's own, cut by the server's ``Timeout``, less a margin to send the answer.
A server that stops answering then gets the caller a 503 naming it, in time,
instead of a DEADLINE_EXCEEDED from the ``TimeoutInterceptor`` and a handler
thread left hanging on a socket.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from me2_scheduler import deadline
from me2_scheduler.errors import RedisIndexError, SchedulerError, StoreError
from me2_scheduler.policy import INTERNAL, INVALID, UNAVAILABLE

log = logging.getLogger("me2_scheduler.rpc")

SUCCESS = "success"  # the ``message`` of every code-0 answer
MAX_MESSAGE_DETAIL = 300  # characters of a driver error shown to a client
BAD_AVATAR_ID = "avatar_id must be a positive integer"

# Of a call's time, what is kept back from its storage I/O to build and send
# the answer before the TimeoutInterceptor answers DEADLINE_EXCEEDED instead.
ANSWER_MARGIN_SHARE = 0.1
ANSWER_MARGIN_MIN_S = 0.05
ANSWER_MARGIN_MAX_S = 0.5

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class Refused(Exception):
    """An answer with a non-zero code, raised anywhere inside a handler."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def one_sentence(text: str) -> str:
    """A driver error as one short clause: one line, no inner full stops, bounded length."""
    text = re.sub(r"\s+", " ", text).strip().rstrip(".")
    text = text.replace(". ", "; ")
    if len(text) > MAX_MESSAGE_DETAIL:
        text = text[: MAX_MESSAGE_DETAIL - 3].rstrip() + "..."
    return text


def io_budget_s(caller_left_s: float | None, server_timeout_ms: int) -> float | None:
    """Seconds a call's MySQL and Redis I/O may take; None: no bound but their own timeouts.

    The caller's remaining time cut by the server's ``Timeout`` (0: none), as the
    ``TimeoutInterceptor`` counts it, less a margin (a tenth, 50-500 ms) to answer.
    """
    bounds = [caller_left_s] if caller_left_s is not None else []
    if server_timeout_ms > 0:
        bounds.append(server_timeout_ms / 1000)
    if not bounds:
        return None
    budget = max(0.0, min(bounds))
    margin = min(ANSWER_MARGIN_MAX_S, max(ANSWER_MARGIN_MIN_S, budget * ANSWER_MARGIN_SHARE))
    return max(0.0, budget - margin)


def answers(response_type: type, *, with_context: bool = False) -> Callable[[_Handler], _Handler]:
    """Turn a handler ``f(self, request) -> response`` into a gRPC method that never raises.

    ``with_context``: the handler is ``f(self, request, context)``. The handler
    runs under the deadline ``self.io_budget_s(context)`` gives (module doc).

    ``Refused`` becomes its code and message; ``StoreError``/``RedisIndexError``
    become 503 "storage unavailable: ..."; another ``SchedulerError`` 500 with
    its message; anything else 500 "internal error" with the traceback logged.
    """

    def wrap(handler: _Handler) -> _Handler:
        @functools.wraps(handler)
        def method(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                with deadline.within(self.io_budget_s(context)):
                    if with_context:
                        return handler(self, request, context)
                    return handler(self, request)
            except Refused as exc:
                return response_type(code=exc.code, message=exc.message)
            except (StoreError, RedisIndexError) as exc:
                log.error("rpc %s: storage unavailable: %s", handler.__name__, exc)
                message = f"storage unavailable: {one_sentence(str(exc))}"
                return response_type(code=UNAVAILABLE, message=message)
            except SchedulerError as exc:
                log.error("rpc %s failed: %s", handler.__name__, exc)
                message = f"internal error: {one_sentence(str(exc))}"
                return response_type(code=INTERNAL, message=message)
            except Exception:
                log.exception("rpc %s: unexpected error", handler.__name__)
                return response_type(code=INTERNAL, message="internal error")

        return method  # type: ignore[return-value]

    return wrap


def valid_avatar_id(avatar_id: int) -> int:
    """``avatar_id`` itself; raise ``Refused(400)`` when it is not positive."""
    if avatar_id <= 0:
        raise Refused(INVALID, BAD_AVATAR_ID)
    return avatar_id
