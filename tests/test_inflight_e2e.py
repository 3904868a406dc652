"""Action calls in flight on the real process tree: what the simulator sees.

Ten workers call a 500 ms Action for a backlog due at once. With
``Schedule.MaxInFlight`` 40 the simulator sees 40 calls at once (and never
more); with the default, one call per worker: 10 at once, never more. With
a simulator with room for three quarters of MaxInFlight, the calls beyond it are
answered RESOURCE_EXHAUSTED, the workers' limits back off, and every avatar
is still dispatched, none lost or paused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.stack import Simulator
from me2_scheduler.config import RedisConf
from me2_scheduler.inflight import InFlight
from me2_scheduler.storage.index import DelayIndex

from .fixtures_service import Running, start_service
from .support import insert_schedules, this_second, wait_until

pytestmark = pytest.mark.timeout(240)

WORKERS = 10
AVATARS = 200
LATENCY_MS = 500
CAPACITY = 30


@pytest.fixture
def make_service(
    tmp_path, mariadb, redis_server, database, redis_key
) -> Iterator[Callable[..., Running]]:
    """Starts an Action simulator (CLI options) and the service on it; stops both after."""
    started: list[tuple[Simulator, Running | None]] = []

    def make(*simulator_options: str, **overrides: object) -> Running:
        action = Simulator("action", tmp_path, simulator_options).start()
        started.append((action, None))
        settings = {"workers": WORKERS, "min_h": 20 / 3600, "max_h": 30 / 3600}
        running = start_service(
            tmp_path, mariadb, redis_server, database, redis_key, action, **settings, **overrides
        )
        started[-1] = (action, running)
        return running

    yield make
    for action, running in started:
        if running is not None:
            running.service.stop()
        action.stop()


def due_now(running: Running, redis_server, redis_key: str) -> None:
    """``AVATARS`` active avatars due a second ago: in MySQL, then in the index."""
    due = this_second() - timedelta(seconds=1)
    rows = [(avatar_id, "active", due) for avatar_id in range(1, AVATARS + 1)]
    insert_schedules(running.mariadb, running.database, rows)
    epoch = int(due.timestamp())
    with DelayIndex(RedisConf(host=redis_server.address, key=redis_key)) as index:
        index.put_due_many([(avatar_id, epoch) for avatar_id, _, _ in rows])


def all_dispatched(running: Running) -> bool:
    (count,) = running.query(
        "SELECT COUNT(DISTINCT avatar_id) FROM avatar_schedule_history WHERE outcome='success'"
    )[0]
    return count == AVATARS


def metric(running: Running, name: str) -> float | None:
    """The value of an unlabelled sample in the service's /metrics."""
    found = re.search(rf"^{name} ([0-9.e+-]+)$", running.scrape(), re.MULTILINE)
    return float(found.group(1)) if found else None


def test_max_in_flight_40_puts_40_calls_in_flight_at_a_500_ms_action(
    make_service, redis_server, redis_key
) -> None:
    running = make_service("--latency-ms", str(LATENCY_MS), max_in_flight=40)
    due_now(running, redis_server, redis_key)
    control = SimulatorControl(running.action.address)
    try:
        wait_until(
            lambda: control.stats().peak_in_flight >= 40, 60, "40 Action calls in flight at once"
        )
        wait_until(lambda: all_dispatched(running), 60, "every avatar dispatched")
        stats = control.stats()
    finally:
        control.close()
    assert stats.peak_in_flight == 40  # never more than MaxInFlight
    assert max(stats.calls_per_key.values()) == 1  # no slot sent twice


def test_the_default_holds_one_call_per_worker_ten_at_most(
    make_service, redis_server, redis_key
) -> None:
    running = make_service("--latency-ms", str(LATENCY_MS))
    due_now(running, redis_server, redis_key)
    control = SimulatorControl(running.action.address)
    try:
        wait_until(lambda: control.stats().peak_in_flight >= WORKERS, 60, "10 Action calls at once")
        wait_until(lambda: all_dispatched(running), 90, "every avatar dispatched")
        stats = control.stats()
    finally:
        control.close()
    assert stats.peak_in_flight == WORKERS
    assert max(stats.calls_per_key.values()) == 1


def test_an_action_with_less_room_than_max_in_flight_is_backed_off_from_and_loses_nothing(
    make_service, redis_server, redis_key
) -> None:
    # Room for three calls in four: the first burst is partly answered
    # RESOURCE_EXHAUSTED, the limits halve, and grow back until Action says so again.
    # Auto-pause is kept out of it (a high MaxConsecutiveFailures): on a slow box an
    # avatar may meet a full Action five times running, and this test is about the
    # back-off and losing nothing, not about where auto-pause draws its line.
    slow_and_full = ("--latency-ms", str(LATENCY_MS), "--capacity", str(CAPACITY))
    running = make_service(*slow_and_full, max_in_flight=40, retry_s=3, max_failures=1000)
    wait_until(
        lambda: metric(running, "scheduler_action_inflight_limit") == 40, 30, "every worker's limit"
    )
    due_now(running, redis_server, redis_key)
    control = SimulatorControl(running.action.address)
    try:
        wait_until(lambda: control.stats().rejected > 0, 60, "calls answered RESOURCE_EXHAUSTED")
        wait_until(
            lambda: (metric(running, "scheduler_action_inflight_limit") or 40) < 40,
            30,
            "the workers' in-flight limits lowered",
        )
        wait_until(lambda: all_dispatched(running), 120, "every avatar dispatched")
        stats = control.stats()
    finally:
        control.close()
    assert stats.peak_in_flight <= CAPACITY
    assert max(stats.calls_per_key.values()) == 1
    statuses = running.query("SELECT status, COUNT(*) FROM avatar_schedules GROUP BY status")
    assert statuses == [("active", AVATARS)]  # none lost, none auto-paused by the rejections


def test_a_worker_pops_what_it_can_start_while_action_is_slow_and_a_batch_while_fast() -> None:
    in_flight: InFlight[int] = InFlight(4)
    assert in_flight.pop_size(32) == 4  # nothing measured yet: what it can start at once
    in_flight.call_s = 0.5
    assert in_flight.pop_size(32) == 4
    in_flight.call_s = 0.05
    assert in_flight.pop_size(32) == 16  # 4 rounds of 4 calls in POP_AHEAD_S
    in_flight.call_s = 0.001
    assert in_flight.pop_size(32) == 32
    assert InFlight(40).pop_size(32) == 40  # never less than the share
