"""End to end: the real process tree on real MariaDB, Redis and the Action simulator.

Intervals are seconds long (fractional hours), so each test sees several
dispatches within its deadline. Waiting is always polling with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from itertools import pairwise

import pytest

from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.stack import Simulator, pid_alive
from me2_scheduler.protos import scheduler_pb2

from .fixtures_service import Running, start_service
from .support import wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def action(tmp_path):
    simulator = Simulator("action", tmp_path).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def make_service(tmp_path, mariadb, redis_server, database, redis_key, action):
    started: list[Running] = []

    def make(**overrides) -> Running:
        running = start_service(
            tmp_path, mariadb, redis_server, database, redis_key, action, **overrides
        )
        started.append(running)
        return running

    yield make
    for running in started:
        running.service.stop()


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def successes(running: Running, avatar_id: int) -> list[tuple]:
    return [h for h in running.history(avatar_id) if h[0] == "success"]


def test_enabled_avatars_are_dispatched_and_rescheduled_within_the_interval(make_service):
    running = make_service(min_h=2 / 3600, max_h=4 / 3600)
    running.enable(*range(1, 21))
    wait_until(
        lambda: all(len(successes(running, a)) >= 2 for a in range(1, 21)),
        90,
        "two successful dispatches of every avatar",
    )
    for avatar_id in range(1, 21):
        done = successes(running, avatar_id)
        for previous, current in pairwise(done):
            # Each planned time is the previous dispatch plus an interval in [2 s, 4 s].
            gap = (current[2] - previous[3].replace(microsecond=0)).total_seconds()
            assert 2 <= gap <= 4, (avatar_id, previous, current)
        row = running.row(avatar_id)
        count = len(running.history(avatar_id))
        assert row["schedule_count"] >= len(done) and row["schedule_count"] <= count
    stats = running.action_stats()
    assert max(stats.calls_per_key.values()) == 1, "a planned slot was dispatched twice"


def test_failures_retry_then_auto_pause_at_the_fifth_and_resume_resets(make_service, action):
    SimulatorControl(action.address).configure(fail_avatars=[7])
    running = make_service(retry_s=1)
    running.enable(7)
    wait_until(lambda: running.row(7)["status"] == "paused", 90, "auto-pause of avatar 7")
    row = running.row(7)
    assert (row["failed_count"], row["pause_reason"]) == (5, "failures")
    outcomes = [h[0] for h in running.history(7)]
    assert outcomes == ["failure"] * 5
    history = running.history(7)
    for previous, current in pairwise(history):
        assert (current[2] - previous[3].replace(microsecond=0)).total_seconds() >= 1
    output = running.service.process.output()
    assert output.count("[TaskExecutor] 分身 7 调度失败") == 5
    assert "[TaskExecutor] 分身 7 连续失败 5 次，暂停调度" in output

    SimulatorControl(action.address).configure(fail_avatars=[])
    reply = running.stub().ResumeAvatarSchedule(
        scheduler_pb2.ResumeAvatarScheduleRequest(avatar_id=7), timeout=10
    )
    assert reply.code == 0 and reply.info.status == "active" and reply.info.failed_count == 0
    wait_until(lambda: successes(running, 7), 60, "a success after resume")
    assert running.row(7)["failed_count"] == 0


def test_a_pause_during_a_dispatch_wins(make_service, action):
    SimulatorControl(action.address).configure(latency_ms=1500)
    running = make_service(action_timeout_ms=5000, lease_s=10)
    running.enable(11)
    wait_until(lambda: "开始调度分身: 11" in running.service.process.output(), 60, "dispatch start")
    reply = running.stub().PauseAvatarSchedule(
        scheduler_pb2.PauseAvatarScheduleRequest(avatar_id=11), timeout=10
    )
    assert reply.code == 0
    wait_until(lambda: running.history(11), 30, "the in-flight dispatch to be recorded")
    SimulatorControl(action.address).configure(latency_ms=0)
    calls_after_pause = running.action_stats().calls_per_avatar[11]
    row = running.row(11)
    assert row["status"] == "paused" and row["pause_reason"] == "user"
    # Several intervals later nothing more has been dispatched for it.
    running.enable(12)
    wait_until(lambda: len(successes(running, 12)) >= 3, 60, "avatar 12 dispatched 3 times")
    assert running.action_stats().calls_per_avatar[11] == calls_after_pause
    assert running.row(11)["status"] == "paused"


def test_trigger_dispatches_now_and_refuses_while_in_flight(make_service, action):
    running = make_service(min_h=1, max_h=2)
    running.enable(21)
    stub = running.stub()
    reply = stub.TriggerSchedule(scheduler_pb2.TriggerScheduleRequest(avatar_id=21), timeout=10)
    assert reply.code == 0 and reply.action_type and reply.action_id > 0
    row = running.row(21)
    assert row["schedule_count"] == 1 and row["last_action_type"] == reply.action_type
    assert [h[1] for h in running.history(21)] == ["manual"]

    SimulatorControl(action.address).configure(latency_ms=1500)
    future = stub.TriggerSchedule.future(
        scheduler_pb2.TriggerScheduleRequest(avatar_id=21), timeout=10
    )
    wait_until(lambda: running.action_stats().calls_per_avatar[21] >= 2, 10, "second trigger")
    second = stub.TriggerSchedule(scheduler_pb2.TriggerScheduleRequest(avatar_id=21), timeout=10)
    assert second.code == 409
    assert future.result().code == 0


def test_sigterm_lets_a_slow_dispatch_finish_and_leaves_no_child(make_service, action):
    SimulatorControl(action.address).configure(latency_ms=2000)
    running = make_service(action_timeout_ms=5000, lease_s=10)
    children = running.service.children()
    running.enable(31)
    wait_until(lambda: "开始调度分身: 31" in running.service.process.output(), 60, "dispatch start")
    running.service.process.signal(signal.SIGTERM)
    assert running.service.process.proc.wait(30) == 0
    assert [h[0] for h in running.history(31)] == ["success"]
    assert not [pid for pid in children if pid_alive(pid)]


def test_a_worker_killed_mid_dispatch_is_replaced_and_the_slot_redone_once(make_service, action):
    SimulatorControl(action.address).configure(latency_ms=1500)
    running = make_service(action_timeout_ms=3000, lease_s=4, workers=2)
    running.enable(41)
    found = wait_until(
        lambda: re.search(
            r"开始调度分身: 41\trole=\S+\tpid=(\d+)", running.service.process.output()
        ),
        60,
        "dispatch start with the worker's pid",
    )
    wait_until(lambda: running.action_stats().calls_per_avatar.get(41), 10, "Action to be called")
    os.kill(int(found.group(1)), signal.SIGKILL)
    SimulatorControl(action.address).configure(latency_ms=0)
    wait_until(lambda: successes(running, 41), 60, "the slot to be dispatched again")
    keys = Counter(k for k in running.action_stats().calls_per_key if k.startswith("41:"))
    first_key = min(running.action_stats().calls_per_key, key=lambda k: int(k.split(":")[1]))
    assert running.action_stats().calls_per_key[first_key] == 2, keys
    assert "killed by SIGKILL" in running.service.process.output()
    killed = int(found.group(1))

    def workers() -> list[int]:
        return [pid for pid in running.service.children() if b"worker" in cmdline(pid)]

    wait_until(lambda: len(workers()) == 2 and killed not in workers(), 30, "a new worker")


def test_children_die_within_two_seconds_of_a_supervisor_kill(make_service):
    running = make_service()
    children = running.service.children()
    assert len(children) >= 5
    running.service.process.signal(signal.SIGKILL)
    wait_until(lambda: not [pid for pid in children if pid_alive(pid)], 2.0, "children to exit")
