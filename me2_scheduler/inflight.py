"""Action calls in flight for one worker: up to its share of ``Schedule.MaxInFlight`` at once.

A worker's calls run on a small thread pool (one synchronous gRPC call per
thread, all on the worker's one channel per endpoint); with a share of one
the call runs on the worker's own thread, exactly as the seed's one call per
worker. An AIMD limit (``clients.limiter``) lowers the calls in flight while
Action answers RESOURCE_EXHAUSTED or UNAVAILABLE and lets them grow back as
it answers again, so the service pushes as hard as Action can take.

How many claims a worker pops at once follows the calls' measured duration
(``pop_size``): a fast Action gets ``DispatchBatch`` per pop (the round
trips are paid once per batch), a slow one only what the worker can start
at once, so a backlog waits in ``ready`` for any idle worker rather than in
one busy worker's batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Generic, Protocol, TypeVar

from me2_scheduler import metrics
from me2_scheduler.clients.limiter import AimdLimiter, Permit, Signal
from me2_scheduler.policy import Attempt, Success

# How long a batch with calls in flight waits for one to finish before it
# looks again at its budget and leases.
FINISH_POLL_S = 0.05
# A worker pops what its calls in flight get through in about this long: a
# claim popped beyond that waits in this worker while another may be idle.
POP_AHEAD_S = 0.2
CALL_WEIGHT = 0.2  # of the newest call in the running average of call durations

T = TypeVar("T")  # what the caller tracks with each call (a claim)


def share_of(max_in_flight: int, max_workers: int, worker_index: int) -> int:
    """The calls worker ``worker_index`` may hold: ``max_in_flight`` spread over the workers.

    The shares add up to ``max_in_flight``; each is at least 1 (config makes
    ``MaxInFlight`` at least ``MaxWorkers``).
    """
    base, extra = divmod(max_in_flight, max_workers)
    return max(1, base + (1 if worker_index % max_workers < extra else 0))


def signal_of(attempt: Attempt | None) -> Signal:
    """What an attempt tells the in-flight limit: Action answered, had no room, or neither
    (None: the call was dropped before it reached Action)."""
    if attempt is None:
        return Signal.IGNORED
    if isinstance(attempt, Success):
        return Signal.SUCCESS
    return Signal.OVERLOAD if attempt.overloaded else Signal.IGNORED


Outcome = Attempt | None  # what a call ends with; None: dropped before it reached Action


class _Executor(Protocol):
    def submit(self, fn: Callable[..., Outcome], /, *args: Any) -> Future[Outcome]: ...


class _Inline:
    """One call at a time, on the caller's own thread."""

    def submit(self, fn: Callable[..., Outcome], /, *args: Any) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        future.set_result(fn(*args))
        return future


class InFlight(Generic[T]):
    """Starts calls while the limit has room and collects those that finished."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._limiter = AimdLimiter(max_in_flight, on_limit=metrics.ACTION_INFLIGHT_LIMIT.set)
        metrics.ACTION_INFLIGHT_LIMIT.set(max_in_flight)
        self._executor: _Executor = (
            ThreadPoolExecutor(max_in_flight, thread_name_prefix="action")
            if max_in_flight > 1
            else _Inline()
        )
        self.running: dict[Future[Outcome], tuple[T, Permit]] = {}
        self._started: dict[Future[Outcome], float] = {}
        self.call_s: float | None = None  # running average of a call's duration; None: no call yet

    @property
    def limit(self) -> int:
        """The calls allowed in flight now (the AIMD limit)."""
        return self._limiter.limit

    def pop_size(self, dispatch_batch: int) -> int:
        """How many claims to pop next: as many as the calls in flight get through in
        ``POP_AHEAD_S``, between the limit and ``max(dispatch_batch, max_in_flight)``.

        Before any call is measured, only the limit: a slow Action's first
        backlog is then spread over the workers, and a fast one's is soon
        popped ``dispatch_batch`` at a time.
        """
        limit = self.limit
        most = max(dispatch_batch, self.max_in_flight)
        if self.call_s is None:
            return min(limit, most)
        rounds = max(1, int(POP_AHEAD_S / max(self.call_s, 1e-4)))
        return max(min(limit, most), min(most, limit * rounds))

    def start(self, pending: deque[tuple[Any, T]], call: Callable[[Any, T], Outcome]) -> None:
        """Start ``call(item, tag)`` for pending pairs while there is room (one when none runs).

        A call may still be dropped when it starts (it returns None): the
        fence right before Action sits in the call itself, since a call
        submitted here may start later than it was submitted.
        """
        while pending:
            permit = self._limiter.acquire(0 if self.running else None)
            if permit is None:
                return
            item, tag = pending.popleft()
            began = time.perf_counter()
            future = self._executor.submit(call, item, tag)
            self.running[future] = (tag, permit)
            self._started[future] = began
            metrics.ACTION_INFLIGHT.inc()

    def finished(self, wait_s: float = FINISH_POLL_S) -> list[tuple[T, Outcome]]:
        """The calls that end within ``wait_s``, with their attempts (None: dropped before
        Action); their room given back."""
        if not self.running:
            return []
        done, _ = wait(self.running, timeout=wait_s, return_when=FIRST_COMPLETED)
        finished: list[tuple[T, Outcome]] = []
        now = time.perf_counter()
        for future in done:
            tag, permit = self.running.pop(future)
            began = self._started.pop(future)
            attempt = future.result()  # the call turns every Action error into an attempt
            if attempt is not None:  # a dropped call says nothing of Action's speed
                self._measured(now - began)
            metrics.ACTION_INFLIGHT.dec()
            permit.release(signal_of(attempt))
            finished.append((tag, attempt))
        return finished

    def _measured(self, call_s: float) -> None:
        average = self.call_s
        self.call_s = call_s if average is None else average + CALL_WEIGHT * (call_s - average)

    def tags(self) -> list[T]:
        """What the calls in flight track, e.g. their claims."""
        return [tag for tag, _ in self.running.values()]
