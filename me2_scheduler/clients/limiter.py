"""An in-flight limit on Action calls that backs off when Action says it is overloaded (AIMD).

Each call takes a permit (``acquire``) and gives it back with its signal
(``Permit.release``). The limit grows by ``1 / limit`` per successful call,
about one more call per round trip, up to ``max_limit``; an overload signal
(``RESOURCE_EXHAUSTED`` or ``UNAVAILABLE``) halves it, floor ``min_limit``.
A call that fails with anything else leaves the limit alone.

One burst of overload answers halves the limit once, not once per answer:
like TCP's one window reduction per round trip, only a call that started
after the last decrease can decrease the limit again. The limit grows only
while at least half of it is in use, so a quiet hour does not drift it up to
the maximum and then release a burst of that size onto Action.

Why AIMD and not a gradient limit (Netflix concurrency-limits' Gradient2,
Vegas): those infer queueing from the ratio of a long-term to a short-term
latency, which needs latency samples that are stable when Action is not
overloaded. Action's latency varies from 50 ms to seconds per call by design
(each call does a different amount of real work), so the gradient would read
that spread as congestion and cut the limit when nothing is wrong. Action,
like every go-zero service, says explicitly when it is overloaded: its
adaptive shedder answers RESOURCE_EXHAUSTED and its server-side breaker
UNAVAILABLE. AIMD reacts to exactly that signal and to nothing else, and
the client breaker (``breaker.py``) handles a service that is failing
outright.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

import grpc

OVERLOAD_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})
BACKOFF = 0.5


class Signal(enum.Enum):
    """How a call ended, as far as the limit is concerned."""

    SUCCESS = "success"  # the service answered: the limit may grow
    OVERLOAD = "overload"  # the service said it is overloaded: the limit shrinks
    IGNORED = "ignored"  # anything else (a caller error, a timeout, a dropped call)


def signal_for(code: grpc.StatusCode | None) -> Signal:
    """The signal of a call that ended with ``code`` (None or OK: a response)."""
    if code is None or code == grpc.StatusCode.OK:
        return Signal.SUCCESS
    if code in OVERLOAD_CODES:
        return Signal.OVERLOAD
    return Signal.IGNORED


class Permit:
    """Leave for one call in flight; ``release`` it exactly once (later calls are no-ops)."""

    __slots__ = ("_generation", "_limiter", "_released")

    def __init__(self, limiter: AimdLimiter, generation: int) -> None:
        self._limiter = limiter
        self._generation = generation
        self._released = False

    def release(self, signal: Signal) -> None:
        """Give the slot back and adapt the limit to ``signal``."""
        self._limiter._release(self, signal)


class AimdLimiter:
    """An adaptive limit on calls in flight; thread-safe.

    ``on_limit`` is called with the new whole limit whenever it changes, under
    the limiter's lock (so gauge values arrive in order); it must not call
    back into the limiter. Raises ``ValueError`` for limits that do not hold
    ``1 <= min_limit <= initial <= max_limit``.
    """

    def __init__(
        self,
        max_limit: int,
        *,
        initial: int | None = None,
        min_limit: int = 1,
        backoff: float = BACKOFF,
        on_limit: Callable[[int], None] | None = None,
    ) -> None:
        start = max_limit if initial is None else initial
        if not 1 <= min_limit <= start <= max_limit:
            raise ValueError(
                f"in-flight limits must hold 1 <= min <= initial <= max,"
                f" not min {min_limit}, initial {start}, max {max_limit}"
            )
        if not 0 < backoff < 1:
            raise ValueError(f"backoff must be between 0 and 1, not {backoff}")
        self.max_limit = max_limit
        self.min_limit = min_limit
        self._backoff = backoff
        self._on_limit = on_limit
        self._limit = float(start)
        self._in_flight = 0
        self._generation = 0  # how many decreases so far
        self._cond = threading.Condition()

    @property
    def limit(self) -> int:
        """The whole number of calls allowed in flight now."""
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        """The calls holding a permit now."""
        return self._in_flight

    def acquire(self, timeout_s: float | None = None) -> Permit | None:
        """A permit once a call fits under the limit; None if none fits within ``timeout_s``.

        ``timeout_s`` None waits as long as it takes; 0 (or less) does not wait.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._in_flight >= int(self._limit):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._in_flight += 1
            return Permit(self, self._generation)

    def _release(self, permit: Permit, signal: Signal) -> None:
        with self._cond:
            if permit._released:
                return
            permit._released = True
            before = self.limit
            if signal is Signal.OVERLOAD:
                self._decrease(permit._generation)
            elif signal is Signal.SUCCESS:
                self._increase()
            self._in_flight -= 1
            if self.limit != before and self._on_limit is not None:
                self._on_limit(self.limit)
            if self.limit > before:
                self._cond.notify_all()  # room for more than the one slot freed
            else:
                self._cond.notify()

    def _decrease(self, generation: int) -> None:
        # A call that started before the last decrease is part of the burst
        # that caused it: it must not halve the limit again.
        if generation != self._generation:
            return
        self._generation += 1
        self._limit = max(float(self.min_limit), float(int(self._limit * self._backoff)))

    def _increase(self) -> None:
        # Only while the limit is what holds calls back: at least half in use.
        if self._in_flight * 2 >= int(self._limit):
            self._limit = min(float(self.max_limit), self._limit + 1 / self._limit)
