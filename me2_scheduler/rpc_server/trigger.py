"""What TriggerSchedule adds to a dispatch: its caller's deadline, its answer, its record.

The Action call inherits the caller as go-zero hands its ctx on
(``caller_of``); the outcome is recorded on a thread of its own, waited for
only as long as the call may wait (``Recorder``); the answer is the success,
or a code and one sentence (``acted``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import grpc

from me2_scheduler import deadline
from me2_scheduler.clients.channels import Caller
from me2_scheduler.dispatch import Dispatched, Dispatcher
from me2_scheduler.policy import INTERNAL, UNAVAILABLE, Attempt, Failure, Success
from me2_scheduler.rpc_server.answers import Refused, one_sentence
from me2_scheduler.states import Outcome
from me2_scheduler.storage.claim import Claim

MIN_ACTION_TIMEOUT_S = 0.001  # a spent budget still means "now": gRPC reads 0 as no deadline
RECORDING_DELAYED = (
    "storage unavailable: Action was called, and recording its outcome takes longer"
    " than this call may wait"
)
# Threads that record manual dispatches: a silent MySQL holds one per trigger
# in progress until its socket timeout, so a few suffice.
RECORDERS = 4


def acted(dispatched: Dispatched) -> Success:
    """The successful attempt of a manual dispatch; raise ``Refused`` for any other end.

    A failure answers 503 when Action was unreachable or too slow, else 500.
    """
    attempt = dispatched.attempt
    if dispatched.result == Outcome.SUCCESS and isinstance(attempt, Success):
        return attempt
    failure = attempt if isinstance(attempt, Failure) else None
    code = UNAVAILABLE if failure is not None and failure.unavailable else INTERNAL
    error = failure.error if failure is not None else ""
    raise Refused(code, f"action failed: {one_sentence(error)}")


def action_timeout_s(
    caller_left_s: float | None, action_timeout_ms: int, server_left_s: float | None
) -> float:
    """The deadline of the Action call a TriggerSchedule makes, in seconds.

    The least of the caller's remaining time, ``ActionRpc.Timeout`` and what
    is left of the server's ``Timeout``, as in go-zero, where the incoming
    ctx (the caller's deadline, cut by the server's per-call timeout) becomes
    the outgoing call's, whose own timeout can only shorten it. None is no
    limit; the result is never below ``MIN_ACTION_TIMEOUT_S``.
    """
    bounds = [action_timeout_ms / 1000]
    bounds += [left for left in (caller_left_s, server_left_s) if left is not None]
    return max(MIN_ACTION_TIMEOUT_S, min(bounds))


def caller_of(
    context: grpc.ServicerContext, began: float, server_timeout_ms: int, action_timeout_ms: int
) -> Caller:
    """The trigger's caller as its Action call inherits it (go-zero's ctx): the
    deadline of ``action_timeout_s``, and a cancel when the caller goes away.

    A caller that goes away (deadline passed, cancelled, or answered
    DEADLINE_EXCEEDED by the server's ``Timeout``) cuts the Action call,
    which is then recorded as a failure, never as a success: a caller that
    retries must not find the first trigger counted as done.
    """
    elapsed = time.monotonic() - began
    server_left = server_timeout_ms / 1000 - elapsed if server_timeout_ms > 0 else None
    timeout = action_timeout_s(context.time_remaining(), action_timeout_ms, server_left)
    return Caller(timeout, context.add_callback)


class Recorder:
    """Records manual dispatches on threads of their own. Call ``close`` after the
    server stopped and before closing the store: it waits for the records still
    being written (bounded by the storage timeouts)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._pool = ThreadPoolExecutor(RECORDERS, thread_name_prefix="trigger-record")

    def recorded(self, claim: Claim, attempt: Attempt) -> Dispatched:
        """The dispatch as recorded, waited for only as long as the call in progress may.

        Once Action was called the outcome is recorded whatever is left of the
        call (``Dispatcher.record``). When MySQL or Redis is too slow for the
        caller's time, the caller gets a 503 in time; the record goes on (or,
        failing, leaves the lease to expire and the slot to be dispatched again
        with the same key).
        """
        recording = self._pool.submit(self._dispatcher.record, claim, attempt)
        left = deadline.remaining()  # gRPC's "no deadline" is a huge remaining time
        wait_s = None if left is None else min(max(0.0, left), threading.TIMEOUT_MAX)
        try:
            return recording.result(timeout=wait_s)
        except FutureTimeout:
            raise Refused(UNAVAILABLE, RECORDING_DELAYED) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
