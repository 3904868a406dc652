"""What a worker records is timed by the servers' clock, not its host's, on real MariaDB,
Redis and the Action simulator.

A dispatcher on a host whose clock is 45 s behind or ahead records the
same started time, lag and next time as one on a host in step: all of them
follow Redis ``TIME`` (sampled by the lease renewal it makes anyway), and a
next time is drawn from the later of the server time and the planned time.
The API's enable and resume draw their next times from the same clock: a
whole service under libfaketime 45 s off sets them by Redis ``TIME``.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from me2_devkit.simulators import RunningSimulator
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_scheduler.attempts import ActionCaller
from me2_scheduler.clock import ServerClock, epoch, from_epoch, utc_now
from me2_scheduler.config import Config, RedisConf, ScheduleConf
from me2_scheduler.dispatch import SERVER_CLOCK_MAX_AGE_S, Dispatcher
from me2_scheduler.errors import RedisIndexError
from me2_scheduler.policy_context import PolicyContext
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.schedule_policy import DEFAULT
from me2_scheduler.storage.index import DelayIndex

from .fixtures_dispatch import FAILING, claim_all, due_now
from .fixtures_service import Running, start_service
from .support import FakeClock

UTC = timezone.utc
LEASE_S = 600.0
SKEWS = [timedelta(seconds=-45), timedelta(seconds=45)]
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
DRAWN_AFTER_S = 600  # MinIntervalHours = MaxIntervalHours: a next time is exactly this later
SKEW_WARNING = re.compile(r"this host's clock is ([+-][0-9.]+) s off Redis TIME")


@pytest.fixture
def config(dispatch_config, failing_simulator: RunningSimulator) -> Config:
    return dispatch_config(failing_simulator.address, schedule=ScheduleConf(lease_seconds=LEASE_S))


def between(moment: datetime, low: float, high: float) -> bool:
    """Whether ``moment`` (whole seconds, as MySQL keeps it) lies in [low, high] epoch s."""
    return int(low) <= moment.timestamp() <= high


@pytest.mark.parametrize("skew", SKEWS, ids=["host-45s", "host+45s"])
def test_a_skewed_host_records_times_by_the_server_clock(
    config: Config, parts, skew: timedelta
) -> None:
    store, index, action = parts
    planned = due_now(store, index, 1, FAILING, ago_s=3)
    claims = claim_all(index, 2, LEASE_S)
    skewed = Dispatcher(
        config, store, index, action, clock=lambda: utc_now() + skew, rng=random.Random(1)
    )

    before = index.now()
    outcomes = {o.avatar_id: o.result for o in skewed.dispatch_batch(claims)}
    after = index.now()

    assert outcomes == {1: "success", FAILING: "failure"}
    hours, retry_s = config.action_schedule, config.schedule.retry_delay_seconds
    next_after_s = {
        1: (hours.min_interval_hours * 3600, hours.max_interval_hours * 3600),
        FAILING: (retry_s, retry_s),
    }
    for avatar_id, (least_s, most_s) in next_after_s.items():
        (entry,) = store.history(avatar_id, 10)
        assert between(entry.started_time, before, after), (entry.started_time, before, after)
        assert between(entry.finished_time, before, after)
        assert (before - planned.timestamp()) * 1000 - 1 <= entry.lag_ms
        assert entry.lag_ms <= (after - planned.timestamp()) * 1000 + 1
        row = store.get(avatar_id)
        assert between(row.next_schedule_time, before + least_s, after + most_s)
        assert index.due_score(avatar_id) == epoch(row.next_schedule_time)


def test_a_next_time_is_drawn_from_the_planned_time_when_the_server_clock_is_behind_it(
    config: Config,
) -> None:
    server_now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    planned = server_now + timedelta(minutes=10)
    caller = ActionCaller(
        config, None, PolicyContext.from_config(config), random.Random(1), lambda: server_now
    )

    drawn = [caller.next_time(planned, DEFAULT, 1) for _ in range(50)]

    low_h = config.action_schedule.min_interval_hours
    assert min(drawn) >= planned + timedelta(hours=low_h)


def test_the_server_clock_runs_on_by_the_local_monotonic_clock_between_samples() -> None:
    monotonic = FakeClock(100.0)
    clock = ServerClock(monotonic, wall=lambda: from_epoch(1_000.0))
    with pytest.raises(LookupError):
        clock.now()

    clock.sample(1_000.0)
    monotonic.advance(2.5)

    assert clock.now() == from_epoch(1_002.5)
    assert clock.age_s() == 2.5


def test_a_host_far_off_the_server_clock_is_warned_about_once_in_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monotonic = FakeClock(0.0)
    clock = ServerClock(monotonic, wall=lambda: from_epoch(1_045.0))
    with caplog.at_level(logging.WARNING, logger="me2_scheduler.clock"):
        for _ in range(3):
            clock.sample(1_000.0)
            monotonic.advance(1.0)

    (warning,) = [r.getMessage() for r in caplog.records]
    assert "+45.0 s off Redis TIME" in warning


@pytest.mark.parametrize("skew_s", [-45, 45], ids=["host-45s", "host+45s"])
def test_enable_and_resume_on_a_skewed_host_draw_next_times_by_the_server_clock(
    tmp_path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    index: DelayIndex,
    failing_simulator: RunningSimulator,
    skew_s: int,
) -> None:
    hours = DRAWN_AFTER_S / 3600
    skewed = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"{skew_s:+d}s"}
    settings = {"env": skewed, "min_h": hours, "max_h": hours}
    running = start_service(
        tmp_path, mariadb, redis_server, database, redis_key, failing_simulator, **settings
    )
    try:
        stub = running.stub()
        enabled = drawn_next(
            running, index, stub.EnableAvatarSchedule, pb.EnableAvatarScheduleRequest
        )
        # The rpc_server's clock really is off: its server clock says so once sampled.
        found = running.service.process.wait_for_output(SKEW_WARNING.pattern, 30)
        assert abs(float(found.group(1)) - skew_s) < 5, found.group(0)
        reply = stub.PauseAvatarSchedule(pb.PauseAvatarScheduleRequest(avatar_id=1), timeout=10)
        assert reply.code == 0, reply.message
        resumed = drawn_next(
            running, index, stub.ResumeAvatarSchedule, pb.ResumeAvatarScheduleRequest
        )
    finally:
        running.service.stop()

    for before, next_s, after in (enabled, resumed):
        assert int(before) + DRAWN_AFTER_S <= next_s <= after + DRAWN_AFTER_S, (before, after)


def drawn_next(
    running: Running, index: DelayIndex, method, request_type
) -> tuple[float, int, float]:
    """Call ``method`` for avatar 1; Redis TIME before, the next time it set (in MySQL and
    in due, epoch s), and Redis TIME after."""
    before = index.now()
    reply = method(request_type(avatar_id=1), timeout=10)
    after = index.now()
    assert reply.code == 0, reply.message
    next_s = epoch(running.row(1)["next_schedule_time"].replace(tzinfo=UTC))
    assert index.due_score(1) == next_s
    return before, next_s, after


class TimeIndex:
    """Just the index's ``now`` (Redis TIME), set by the test, or failing."""

    def __init__(self, epoch_s: float) -> None:
        self.epoch_s = epoch_s
        self.down = False

    def now(self) -> float:
        if self.down:
            raise RedisIndexError("Redis 127.0.0.1:1: Timeout reading from socket")
        return self.epoch_s


@dataclass
class Clocked:
    """A dispatcher whose monotonic clock, host clock and Redis TIME the test moves."""

    dispatcher: Dispatcher
    index: TimeIndex
    monotonic: FakeClock
    wall: FakeClock

    def elapse(self, seconds: float, *, monotonic_s: float | None = None) -> None:
        """``seconds`` pass on this host's clock; as many on the monotonic one, unless
        ``monotonic_s`` says otherwise (a paused VM)."""
        self.monotonic.advance(seconds if monotonic_s is None else monotonic_s)
        self.wall.advance(timedelta(seconds=seconds))


def clocked(config: Config, redis_time_s: float = 1_000.0) -> Clocked:
    monotonic, wall, index = (
        FakeClock(0.0),
        FakeClock(from_epoch(redis_time_s)),
        TimeIndex(redis_time_s),
    )
    dispatcher = Dispatcher(config, None, index, None, clock=wall, monotonic=monotonic)  # type: ignore[arg-type]
    return Clocked(dispatcher, index, monotonic, wall)


def test_a_stale_sample_is_read_again_from_redis_and_an_unreachable_redis_keeps_the_last(
    config: Config, parts
) -> None:
    _, index, _ = parts
    monotonic, wall = FakeClock(0.0), FakeClock(utc_now())
    dispatcher = Dispatcher(config, None, index, None, clock=wall, monotonic=monotonic)  # type: ignore[arg-type]
    first = dispatcher.server_now()  # read from the real Redis

    monotonic.advance(SERVER_CLOCK_MAX_AGE_S / 2)  # fresh: run on, no read
    wall.advance(timedelta(seconds=SERVER_CLOCK_MAX_AGE_S / 2))
    assert dispatcher.server_now() == first + timedelta(seconds=SERVER_CLOCK_MAX_AGE_S / 2)

    # Stale: twice the age on the local clocks, a moment on Redis's. Redis says the time.
    monotonic.advance(2 * SERVER_CLOCK_MAX_AGE_S)
    wall.advance(timedelta(seconds=2 * SERVER_CLOCK_MAX_AGE_S))
    again = dispatcher.server_now()
    assert first <= again <= from_epoch(index.now())

    dispatcher.index = DelayIndex(RedisConf(host=f"127.0.0.1:{free_port()}", key="gone"))
    monotonic.advance(1_000)  # stale, and Redis cannot say: the last sample runs on
    wall.advance(timedelta(seconds=1_000))
    assert dispatcher.server_now() == again + timedelta(seconds=1_000)
    dispatcher.index.close()


def test_a_stalled_monotonic_clock_is_caught_by_this_hosts_clock_moving_on(
    config: Config,
) -> None:
    run = clocked(config)
    run.dispatcher.server_now()
    # A paused VM: 10 s pass on the servers and this host's clock, 0.1 s on the monotonic one.
    run.elapse(10, monotonic_s=0.1)
    run.index.epoch_s = 1_010.0
    assert run.dispatcher.server_now() == from_epoch(1_010.0)


def test_with_no_sample_yet_an_unreachable_redis_is_an_error(config: Config) -> None:
    run = clocked(config)
    run.index.down = True
    with pytest.raises(RedisIndexError):
        run.dispatcher.server_now()
