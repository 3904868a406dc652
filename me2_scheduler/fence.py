"""Fencing Action calls: a claim reaches Action only while its worker still holds its lease.

A worker can freeze anywhere (SIGSTOP, a paused VM, a starved CPU) for longer
than a lease: the poller then releases the lease and another worker takes the
slot. When the frozen worker wakes, the claims it picked up but has not yet
called must not reach Action. ``LeaseFence`` remembers when the lease of each
claim not yet called was last confirmed; right before a call starts, a claim
confirmed longer ago than ``CONFIRM_AFTER`` of the lease is confirmed again
(together with every claim still waiting, in one script call), and a claim
found lost is dropped. Normally the pick-up check's renewal is recent and the
fence costs no round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from me2_scheduler import metrics
from me2_scheduler.errors import RedisIndexError
from me2_scheduler.storage.claim import Claim

log = logging.getLogger("me2_scheduler.dispatch")

# Of the lease: a claim whose lease was last confirmed longer ago than this is
# confirmed again right before its Action call. Well under the whole lease, so a
# claim let through still has most of its lease left for the call and its record.
CONFIRM_AFTER = 1 / 3

Renew = Callable[[list[Claim]], list[bool]]  # restarts leases; one "still held" flag per claim


class LeaseFence:
    """The claims of one batch not yet called, and when their leases were last confirmed.

    ``renew`` confirms and restarts leases in one call (``DelayIndex.renew_leases``
    under the batch's lease length); ``monotonic`` is the local clock (a
    freeze moves it on). Thread-safe: the calls of a batch start on several
    threads.
    """

    def __init__(
        self, renew: Renew, lease_s: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._renew = renew
        self.confirm_after_s = lease_s * CONFIRM_AFTER
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._confirmed: dict[Claim, float] = {}  # claim -> monotonic time of its last renewal

    def confirmed(self, claims: Iterable[Claim], at: float) -> None:
        """Note that the leases of ``claims`` were restarted at ``at`` (monotonic seconds,
        taken before the renewal was sent); claims not among them are left as they are."""
        with self._lock:
            for claim in claims:
                self._confirmed[claim] = at

    def renewed(self, claims: Iterable[Claim], held: Iterable[bool], at: float) -> None:
        """Note a renewal of ``claims`` sent at ``at`` (one ``held`` flag each): the claims
        still waiting count as confirmed then, or are dropped if lost; the others (let
        through already, or never tracked) are left alone."""
        with self._lock:
            for claim, ok in zip(claims, held, strict=True):
                if claim in self._confirmed:
                    if ok:
                        self._confirmed[claim] = at
                    else:
                        del self._confirmed[claim]

    def forget(self, claims: Iterable[Claim]) -> None:
        """Stop tracking ``claims`` (lost, or handed back): ``holds`` says no to them."""
        with self._lock:
            for claim in claims:
                self._confirmed.pop(claim, None)

    def holds(self, claim: Claim) -> bool:
        """Whether ``claim`` may be called now; it is then no longer tracked.

        True when its lease was confirmed within ``confirm_after_s``, or is
        confirmed again now (every claim waiting is renewed in the same
        call). False for a claim lost, forgotten, never confirmed or already
        let through. Raises RedisIndexError when the renewal fails: the claim
        is then dropped (its lease brings it back).
        """
        with self._lock:
            at = self._confirmed.pop(claim, None)
            if at is None:
                return False
            if self._monotonic() - at <= self.confirm_after_s:
                return True
            waiting = [claim, *self._confirmed]
            sent = self._monotonic()
            held = self._renew(waiting)
            for other, ok in zip(waiting[1:], held[1:], strict=True):
                if ok:
                    self._confirmed[other] = sent
                else:
                    del self._confirmed[other]
            return held[0]

    def lets_through(self, claim: Claim) -> bool:
        """``holds(claim)``, logged when it does not; a Redis error drops the claim (logged
        and counted: its lease brings the slot back, with the same key)."""
        key = claim.idempotency_key
        try:
            if self.holds(claim):
                return True
        except RedisIndexError as exc:
            log.error("[TaskExecutor] could not confirm the lease of slot %s: %s", key, exc)
            metrics.ERRORS.labels(role="worker", kind=type(exc).__name__).inc()
            return False
        log.warning("[TaskExecutor] slot %s: lease lost before the Action call; not called", key)
        return False
