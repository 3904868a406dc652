"""Time helpers, in one place: the current UTC time, epoch seconds both ways, and the
servers' clock as a worker reads it.

The Redis index scores avatars by whole epoch seconds (the resolution of the
seed's DATETIME columns); the store and the API work with aware datetimes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

log = logging.getLogger("me2_scheduler.clock")

# This host's clock this far off the servers' is worth a warning (what a worker
# records follows the servers whatever it is), at most once per SKEW_WARN_EVERY_S.
SKEW_WARN_S = 2.0
SKEW_WARN_EVERY_S = 600.0
# This host's clock and the monotonic one drifting apart by this much since a
# sample means one of them jumped: the sample no longer tells the time.
JUMP_S = 1.0

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def epoch(moment: datetime) -> int:
    """Whole epoch seconds of an aware datetime (the index's score), fraction dropped.

    Raises ValueError if ``moment`` is naive: ``timestamp()`` would silently
    read it as this host's local time.
    """
    if moment.utcoffset() is None:
        raise ValueError(f"time {moment.isoformat()} has no time zone")
    return (moment - _EPOCH) // _SECOND


def from_epoch(seconds: float) -> datetime:
    """The aware UTC datetime of ``seconds`` since the epoch (a fraction is kept)."""
    return datetime.fromtimestamp(seconds, timezone.utc)


class ServerClock:
    """The servers' time as read on this host: the last Redis ``TIME`` sampled, plus the
    local monotonic time elapsed since.

    What a worker records (a dispatch's start, its next time, its lag) is read
    here, so a host whose wall clock is skewed records what any other host
    would: the index already decides "is it due" by Redis ``TIME``. Samples
    come from script calls made anyway (a lease renewal returns ``TIME``);
    between them the monotonic clock, which no wall-clock step moves,
    measures the time elapsed. ``wall`` (this host's clock) is only read to
    warn when it is off. Thread-safe.
    """

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        # (server epoch s, monotonic s, this host's epoch s) at the last sample
        self._sample: tuple[float, float, float] | None = None
        self._warned_at: float | None = None

    def sample(self, server_epoch: float) -> None:
        """Take ``server_epoch`` (epoch seconds the server just reported) as the time now."""
        at, wall = self._monotonic(), self._wall().timestamp()
        with self._lock:
            self._sample = (server_epoch, at, wall)
            skew = wall - server_epoch
            if abs(skew) <= SKEW_WARN_S or (
                self._warned_at is not None and at - self._warned_at < SKEW_WARN_EVERY_S
            ):
                return
            self._warned_at = at
        log.warning(
            "this host's clock is %+.1f s off Redis TIME; times recorded follow Redis", skew
        )

    def age_s(self) -> float | None:
        """Seconds since the last sample; None before the first."""
        with self._lock:
            sample = self._sample
        return None if sample is None else self._monotonic() - sample[1]

    def stale(self, max_age_s: float) -> bool:
        """Whether to sample again: never sampled, sampled over ``max_age_s`` ago, or the
        monotonic clock has not kept pace with this host's since (a paused VM, a
        process under libfaketime): more than ``JUMP_S`` between the two elapsed times."""
        with self._lock:
            sample = self._sample
        if sample is None:
            return True
        _, at, wall = sample
        elapsed = self._monotonic() - at
        jumped = abs((self._wall().timestamp() - wall) - elapsed) > JUMP_S
        return elapsed > max_age_s or jumped

    def epoch_now(self) -> float:
        """The servers' time now, in epoch seconds; raise ``LookupError`` before a sample."""
        with self._lock:
            sample = self._sample
        if sample is None:
            raise LookupError("the server clock has not been sampled yet")
        server_epoch, at, _ = sample
        return server_epoch + max(0.0, self._monotonic() - at)

    def now(self) -> datetime:
        """The servers' time now, aware, in UTC; raise ``LookupError`` before a sample."""
        return from_epoch(self.epoch_now())
