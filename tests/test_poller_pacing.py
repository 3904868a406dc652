"""The poller's pacing: ticks just after each PollInterval boundary of Redis's clock.

Pure arithmetic and a stub index (only ``now`` and the ready list's length are
read), so these are exact.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from me2_scheduler.config import Config, ScheduleConf
from me2_scheduler.workers.poller import BUSY_POLL_S, Poller, next_tick_delay


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        (100.5, 1.0, 0.51),  # mid-second: wait for just after the next second
        (100.005, 1.0, 0.005),  # just before the offset: tick at 100.01
        (100.01, 1.0, 1.0),  # exactly on it: the next one
        (100.05, 0.2, 0.16),  # a fractional interval aligns to its own multiples
        (100.0, 0.0, 0.0),  # no interval, no wait
    ],
)
def test_the_next_tick_comes_just_after_an_interval_boundary(
    now: float, interval: float, expected: float
) -> None:
    assert next_tick_delay(now, interval) == pytest.approx(expected, abs=1e-9)


class RedisClockOnly:
    """Stands in for DelayIndex where only Redis TIME and the ready list's length are read."""

    def __init__(self, redis_now: float, ready: int = 0) -> None:
        self.redis_now = redis_now
        self.ready = ready
        self.reads = 0

    def now(self) -> float:
        self.reads += 1
        return self.redis_now

    def ready_length(self) -> int:
        return self.ready


def make_poller(index: RedisClockOnly, host_now: float) -> Poller:
    config = Config(schedule=ScheduleConf(poll_interval=1.0, claim_batch=500))
    wall = lambda: datetime.fromtimestamp(host_now, timezone.utc)  # noqa: E731
    return Poller(config, store=None, index=index, wall=wall)  # type: ignore[arg-type]


def test_an_idle_poller_aligns_to_redis_time_not_to_a_skewed_host_clock() -> None:
    index = RedisClockOnly(redis_now=1000.3)
    poller = make_poller(index, host_now=996.6)  # the host runs 3.7 s behind Redis
    assert poller.pause_after(0) == pytest.approx(0.71)
    assert index.reads == 1


def test_a_full_batch_is_followed_at_once_and_a_partial_one_soon() -> None:
    index = RedisClockOnly(redis_now=1000.3)
    poller = make_poller(index, host_now=1000.3)
    assert poller.pause_after(500) == 0.0
    assert poller.pause_after(1) == BUSY_POLL_S
    assert index.reads == 0  # Redis is asked for its clock only when idle


def test_a_tick_held_back_by_a_full_ready_list_is_followed_soon_not_next_interval() -> None:
    # Claiming nothing because the workers still have the high-water mark of
    # claims in hand must not idle the poller until the next second: they
    # drain the list well within it and would then wait for work.
    index = RedisClockOnly(redis_now=1000.3, ready=500)
    poller = make_poller(index, host_now=1000.3)
    assert poller.pause_after(0) == BUSY_POLL_S
    index.ready = 0
    assert poller.pause_after(0) == pytest.approx(0.71)
