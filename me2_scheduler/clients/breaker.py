"""go-zero's client-side adaptive throttling (Google SRE), for the Action and Diary clients.

A zrpc client wraps every call in a breaker (``core/breaker/googlebreaker.go``)
that rejects calls locally, before they reach a failing service, with a
probability that rises as the share of accepted calls falls. This is that
breaker, as go-zero computes it today:

* a rolling window of 10 s in 40 buckets of 250 ms counts, per bucket, the
  calls that succeeded, failed and were dropped here; ``total`` counts all
  three, ``accepts`` only successes (a dropped call is a request the
  application made, as in the SRE book, so it keeps the ratio up);
* ``failing`` is the run of newest non-empty buckets with failures and no
  success, ``working`` the run with successes and no failure;
* the weight K falls from 1.5 towards 1.1 as ``failing`` grows, so a service
  failing for longer is throttled harder:
  ``w = max(1.5 - 0.4 * failing / 40, 1.1)``;
* ``ratio = (total - 5 - w * accepts) / (total + 1)``, 5 being go-zero's
  ``protection`` (a handful of failures never throttle); at or below 0 the
  call passes;
* otherwise, when a call last passed over 1 s ago, this one passes as a probe
  (go-zero's ``forcePassDuration``), so a recovered service is seen again;
* otherwise the call is dropped with probability
  ``ratio * (40 - working) / 40``: a run of clean buckets eases the drop.

The issue text gives the SRE book's plain ``max(0, (requests - K*accepts) /
(requests + 1))``; go-zero adds the protection, the sliding K, the probe and
the ``working`` factor, and they are followed here. With no failing or
working run, ``drop_ratio`` is exactly ``max(0, (requests - 5 - 1.5 *
accepts) / (requests + 1))``.

Which gRPC outcomes are failures follows ``zrpc/internal/codes/accept.go``:
DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNIMPLEMENTED and
RESOURCE_EXHAUSTED; every other code (an application error such as
INVALID_ARGUMENT included) means the service answered, so it is accepted.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from me2_scheduler.errors import DownstreamError

WINDOW_S = 10.0
BUCKETS = 40
K = 1.5
MIN_K = 1.1
PROTECTION = 5
FORCE_PASS_S = 1.0

FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def acceptable(code: grpc.StatusCode | None) -> bool:
    """Whether a call that ended with ``code`` (None or OK: no error) counts as accepted."""
    return code not in FAILURE_CODES


class BreakerOpen(DownstreamError):
    """A call dropped locally by the breaker; Action (or Diary) counts as unavailable."""

    def __init__(self, service: str, stats: WindowStats) -> None:
        super().__init__(
            f"{service} breaker is open: call dropped locally, {stats.accepts} of"
            f" {stats.total} {service} calls accepted in the last {WINDOW_S:g} s",
            unavailable=True,
        )
        self.service = service
        self.stats = stats


@dataclass(frozen=True)
class WindowStats:
    """What the rolling window holds: calls accepted, all calls, and the newest runs."""

    accepts: int
    total: int
    failing_buckets: int
    working_buckets: int


def base_ratio(stats: WindowStats, k: float = K) -> float:
    """go-zero's drop ratio before the probe and the ``working`` factor; may be <= 0."""
    weight = max(k - (k - MIN_K) * stats.failing_buckets / BUCKETS, MIN_K)
    return (stats.total - PROTECTION - weight * stats.accepts) / (stats.total + 1)


def drop_ratio(stats: WindowStats, k: float = K) -> float:
    """The probability a call is dropped (when it is not a probe), in [0, 1)."""
    ratio = base_ratio(stats, k)
    if ratio <= 0:
        return 0.0
    return ratio * ((BUCKETS - stats.working_buckets) / BUCKETS)  # go-zero's order


class _Bucket:
    __slots__ = ("drop", "epoch", "failure", "success")

    def __init__(self) -> None:
        self.epoch = -1
        self.success = self.failure = self.drop = 0


class RollingWindow:
    """Counts of successes, failures and drops in ``buckets`` slices of ``window_s``.

    Not thread-safe on its own: ``AdaptiveBreaker`` holds its lock around it.
    """

    def __init__(self, now: float, window_s: float = WINDOW_S, buckets: int = BUCKETS) -> None:
        if buckets < 1 or window_s <= 0:
            raise ValueError(
                f"a window needs buckets >= 1 and a length > 0, not {buckets}, {window_s}"
            )
        self._origin = now
        self._interval = window_s / buckets
        self._buckets = [_Bucket() for _ in range(buckets)]

    def _epoch(self, now: float) -> int:
        return math.floor((now - self._origin) / self._interval)

    def add(self, now: float, *, success: int = 0, failure: int = 0, drop: int = 0) -> None:
        """Count calls in the bucket of ``now``, forgetting what that slot held 10 s ago."""
        epoch = self._epoch(now)
        bucket = self._buckets[epoch % len(self._buckets)]
        if bucket.epoch != epoch:
            bucket.epoch = epoch
            bucket.success = bucket.failure = bucket.drop = 0
        bucket.success += success
        bucket.failure += failure
        bucket.drop += drop

    def stats(self, now: float) -> WindowStats:
        """The sums over the buckets of the last window, and the newest runs, as go-zero."""
        accepts = total = failing = working = 0
        newest = self._epoch(now)
        size = len(self._buckets)
        for epoch in range(newest - size + 1, newest + 1):  # oldest first
            bucket = self._buckets[epoch % size]
            if bucket.epoch != epoch:
                continue  # empty or expired: neither breaks nor extends a run
            accepts += bucket.success
            total += bucket.success + bucket.failure + bucket.drop
            working = 0 if bucket.failure else working + (bucket.success > 0)
            failing = 0 if bucket.success else failing + (bucket.failure > 0)
        return WindowStats(accepts, total, failing, working)


class Ticket:
    """Leave to make one call; settle it once with ``accept``, ``reject`` or ``record``.

    Only the first settlement counts, so a ``finally: ticket.reject()`` after
    an ``accept`` is harmless.
    """

    __slots__ = ("_breaker", "_lock", "_settled")

    def __init__(self, breaker: AdaptiveBreaker) -> None:
        self._breaker = breaker
        self._lock = threading.Lock()
        self._settled = False

    def _settle(self, ok: bool) -> None:
        with self._lock:
            if self._settled:
                return
            self._settled = True
        self._breaker._mark(ok)

    def accept(self) -> None:
        """The service answered (success, or an error that is the caller's own)."""
        self._settle(True)

    def reject(self) -> None:
        """The service failed: unreachable, overloaded, too slow or broken."""
        self._settle(False)

    def record(self, code: grpc.StatusCode | None) -> None:
        """Settle by the call's gRPC code (None or OK for a response), as go-zero classes it."""
        self._settle(acceptable(code))


class AdaptiveBreaker:
    """go-zero's Google SRE breaker for one downstream service; thread-safe.

    ``clock`` returns seconds (monotonic), ``rng`` decides the drops;
    ``on_reject`` is called (outside the lock, no arguments) for every call
    dropped, e.g. a bound ``Counter.labels(service).inc``.
    """

    def __init__(
        self,
        service: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_reject: Callable[[], None] | None = None,
        k: float = K,
    ) -> None:
        self.service = service
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._on_reject = on_reject
        self._k = k
        self._lock = threading.Lock()
        self._window = RollingWindow(clock())
        self._last_pass: float | None = None

    def allow(self) -> Ticket:
        """A ticket for one call; raises ``BreakerOpen`` when the call is dropped here."""
        with self._lock:
            now = self._clock()
            stats = self._window.stats(now)
            dropped = self._drops(stats, now)
            if dropped:
                self._window.add(now, drop=1)
        if dropped:
            if self._on_reject is not None:
                self._on_reject()
            raise BreakerOpen(self.service, stats)
        return Ticket(self)

    def _drops(self, stats: WindowStats, now: float) -> bool:
        """go-zero's ``accept``: whether this call is dropped; notes when a call passed."""
        if base_ratio(stats, self._k) <= 0:
            return False
        if self._last_pass is not None and now - self._last_pass > FORCE_PASS_S:
            self._last_pass = now  # a probe: nothing passed for a second
            return False
        if self._rng.random() < drop_ratio(stats, self._k):
            return True
        self._last_pass = now
        return False

    def _mark(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._window.add(self._clock(), success=1)
            else:
                self._window.add(self._clock(), failure=1)

    def stats(self) -> WindowStats:
        """The window's counts now (for tests, logs and metrics)."""
        with self._lock:
            return self._window.stats(self._clock())

    def drop_ratio(self) -> float:
        """The drop probability a call that is not a probe would face now."""
        return drop_ratio(self.stats(), self._k)
