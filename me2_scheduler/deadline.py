"""The deadline of the call in progress, for the MySQL and Redis I/O made on its behalf.

An RPC handler sets it (``within``) from its caller's deadline and the
server's ``Timeout``; the MySQL pool and the Redis connections read it
(``cut``) and never wait on the network past it. A silent server then costs
the caller a 503 in time, not a DEADLINE_EXCEEDED after a handler thread has
hung on a socket. Outside any ``within`` block there is no deadline, and the
configured socket timeouts alone bound each wait.

A context variable: each thread (and each asyncio task) sees its own, and a
thread started inside a block does not inherit it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

# A socket timeout of 0 would mean "non-blocking" and None "no limit": a spent
# deadline is cut to this instead, so the next wait fails at once as a timeout.
MIN_WAIT_S = 0.001

_DEADLINE: ContextVar[float | None] = ContextVar("me2_deadline", default=None)


@contextlib.contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Bound the block's I/O to ``seconds`` from now; None adds no bound.

    A nested bound never extends an outer one: the sooner deadline wins.
    """
    if seconds is None:
        yield
        return
    until = time.monotonic() + max(0.0, seconds)
    outer = _DEADLINE.get()
    token = _DEADLINE.set(until if outer is None else min(outer, until))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@contextlib.contextmanager
def lifted() -> Iterator[None]:
    """No deadline inside the block: for work that must finish once begun (recording
    a dispatch that Action already carried out), bounded by the socket timeouts alone."""
    token = _DEADLINE.set(None)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the deadline (negative once passed); None without one."""
    until = _DEADLINE.get()
    return None if until is None else until - time.monotonic()


def passed() -> bool:
    """Whether a deadline is set and already passed."""
    left = remaining()
    return left is not None and left <= 0


def cut(timeout_s: float | None) -> float | None:
    """``timeout_s`` (None: no limit) shortened to what is left of the deadline.

    Never below ``MIN_WAIT_S``, so a socket given the result always waits a
    little and fails as a timeout, never as a non-blocking call.
    """
    left = remaining()
    if left is None:
        return timeout_s
    left = max(left, MIN_WAIT_S)
    return left if timeout_s is None else min(timeout_s, left)
