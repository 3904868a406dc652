"""TriggerSchedule honours its caller's deadline, as go-zero hands the incoming ctx on.

The Action call a trigger makes ends by the least of the caller's remaining
time, ``ActionRpc.Timeout`` and the server's ``Timeout``, and is cancelled
when the caller goes away; a trigger cut so is recorded as a failure, never
as a success, so a caller that retries does not trigger twice unseen.

In-process tests use a real server, MariaDB, Redis and an Action simulator
that notes the deadline each call arrives with and whether its caller was
still there when it answered; the last test runs the real process tree.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timezone
from typing import Any

import grpc
import pytest

from me2_devkit.simulators import ActionSimulator, RunningSimulator, SimulatorControl, serve
from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_devkit.testing.stack import Simulator
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clients.channels import Caller
from me2_scheduler.config import Config, RpcClientConf
from me2_scheduler.errors import DownstreamError
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.rpc_server.trigger import MIN_ACTION_TIMEOUT_S, action_timeout_s
from me2_scheduler.storage.index import DelayIndex

from .fixtures_rpc import Harness, put_in_state, start_harness, stop_harness
from .fixtures_service import start_service
from .support import wait_until

SLOW_ACTION_MS = 1500
SHORT_DEADLINE_S = 0.3
WAIT_S = 10.0  # how long a test waits for something that happens at once when all is well
# gRPC carries a deadline on the wire as a rounded-up timeout, and the two ends
# read it with their own clocks: what Action sees may exceed the bound by a little.
WIRE_SLACK_S = 0.25

# -- the deadline: a pure function ----------------------------------------------


@pytest.mark.parametrize(
    ("caller_left_s", "action_timeout_ms", "server_left_s", "expected"),
    [
        (0.3, 2000, 2.0, 0.3),  # the caller's deadline is nearest
        (10.0, 2000, 5.0, 2.0),  # ActionRpc.Timeout
        (10.0, 2000, 0.5, 0.5),  # what is left of the server's Timeout
        (None, 2000, None, 2.0),  # no caller deadline, server Timeout 0
        (9.2e18, 2000, 1.0, 1.0),  # grpc's "no deadline" is a huge remaining time
        (0.0, 2000, 1.0, MIN_ACTION_TIMEOUT_S),  # spent: still a deadline, never "none"
        (1.0, 2000, -0.2, MIN_ACTION_TIMEOUT_S),  # the server's Timeout already overrun
    ],
)
def test_the_action_deadline_is_the_least_of_the_callers_action_timeout_and_server_timeout(
    caller_left_s: float | None,
    action_timeout_ms: int,
    server_left_s: float | None,
    expected: float,
) -> None:
    assert action_timeout_s(caller_left_s, action_timeout_ms, server_left_s) == expected


# -- an Action simulator that watches its callers ---------------------------------


@dataclass(frozen=True)
class ActionCall:
    """One call as Action saw it."""

    avatar_id: int
    arrived_with_s: float  # the deadline left when it arrived
    caller_stayed: bool  # the caller was still there when Action answered


class WatchedAction(ActionSimulator):
    """The Action simulator, noting each call once it has answered (or given up)."""

    def __init__(self) -> None:
        super().__init__(seed=5)
        self.calls: queue.Queue[ActionCall] = queue.Queue()

    def ScheduleAction(self, request: Any, context: grpc.ServicerContext) -> Any:
        arrived_with = context.time_remaining()
        reply = super().ScheduleAction(request, context)  # waits the latency, or less if cut
        self.calls.put(ActionCall(request.avatar_id, arrived_with, context.is_active()))
        return reply

    def next_call(self) -> ActionCall:
        return self.calls.get(timeout=WAIT_S)


Watched = tuple[WatchedAction, RunningSimulator]  # the servicer, and its running server


@pytest.fixture
def action() -> Iterator[Watched]:
    watched = WatchedAction()
    running = serve(watched, "127.0.0.1:0")
    yield watched, running
    running.stop(grace=0)


@pytest.fixture
def harnesses(rpc_base_config: Config, action: Watched) -> Iterator[Callable[..., Harness]]:
    """Start servers with ``Timeout`` (server) and ``ActionRpc.Timeout`` in ms; stopped after.

    The ``rpc`` fixture is one of them with the defaults.
    """
    started: list[Harness] = []

    def start(*, server_ms: int = 10_000, action_ms: int = 5000) -> Harness:
        rpc_conf = RpcClientConf(endpoints=(action[1].address,), timeout_ms=action_ms)
        config = replace(rpc_base_config, timeout_ms=server_ms, action_rpc=rpc_conf)
        started.append(start_harness(config))
        return started[-1]

    yield start
    for harness in started:
        stop_harness(harness)


def trigger(rpc: Harness, avatar_id: int, deadline_s: float | None) -> Any:
    return rpc.stub.TriggerSchedule(
        pb.TriggerScheduleRequest(avatar_id=avatar_id), timeout=deadline_s
    )


def slow_action(running: RunningSimulator, latency_ms: int = SLOW_ACTION_MS) -> None:
    SimulatorControl(running.address).configure(latency_ms=latency_ms)


def trigger_past_deadline(
    rpc: Harness, action: Watched, avatar_id: int, deadline_s: float
) -> tuple[grpc.StatusCode, ActionCall]:
    """Trigger with ``deadline_s`` while Action is slow: the caller's code, Action's view."""
    slow_action(action[1])
    with pytest.raises(grpc.RpcError) as raised:
        trigger(rpc, avatar_id, deadline_s)
    return raised.value.code(), action[0].next_call()


def assert_recorded_as_a_failure(rpc: Harness, avatar_id: int, before: Any) -> Any:
    """The one dispatch is in history as a failure; counted as one; the lease is settled."""
    wait_until(lambda: rpc.history_count(avatar_id) == 1, WAIT_S, "the cut trigger's record")
    [entry] = rpc.store.history(avatar_id, 10)
    assert (entry.trigger, entry.outcome, entry.action_type) == ("manual", "failure", None)
    after = rpc.store.get(avatar_id)
    counts = (after.schedule_count, after.failed_count)
    assert counts == (before.schedule_count, before.failed_count + 1)
    assert after.last_schedule_time == before.last_schedule_time
    assert after.last_error == entry.error
    wait_until(lambda: not rpc.index.is_inflight(avatar_id), WAIT_S, "the lease to end")
    rpc.assert_index_matches_mysql()
    return entry


# -- the deadline on the wire ---------------------------------------------------------


@pytest.mark.parametrize(
    ("caller_s", "action_ms", "server_ms"),
    [(3.0, 20_000, 25_000), (25.0, 3000, 20_000), (25.0, 20_000, 3000), (None, 3000, 0)],
    ids=["callers-deadline", "action-timeout", "server-timeout", "no-caller-deadline"],
)
def test_the_action_call_arrives_with_the_least_of_the_three_deadlines(
    harnesses: Callable[..., Harness],
    action: Watched,
    caller_s: float | None,
    action_ms: int,
    server_ms: int,
) -> None:
    rpc = harnesses(server_ms=server_ms, action_ms=action_ms)
    put_in_state(rpc, 1, "active")
    assert trigger(rpc, 1, caller_s).code == 0
    call = action[0].next_call()
    # Every other bound is at least 20 s: a call carrying one of them would show it.
    assert 0 < call.arrived_with_s <= 3.0 + WIRE_SLACK_S
    assert call.caller_stayed


def test_a_trigger_cut_by_its_callers_deadline_cancels_action_and_is_recorded_as_a_failure(
    rpc: Harness, action: Watched
) -> None:
    before = put_in_state(rpc, 2, "active")
    code, call = trigger_past_deadline(rpc, action, 2, SHORT_DEADLINE_S)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert call.arrived_with_s <= SHORT_DEADLINE_S + WIRE_SLACK_S
    assert not call.caller_stayed  # Action saw the call end before its 1.5 s were up
    entry = assert_recorded_as_a_failure(rpc, 2, before)
    assert "DEADLINE_EXCEEDED" in entry.error or "the caller went away" in entry.error
    after = rpc.store.get(2)
    assert after.status == "active"
    assert rpc.index.due_score(2) is not None  # back in due, at the retry time MySQL holds


def test_a_trigger_its_caller_cancels_cancels_action_and_is_recorded_as_a_failure(
    rpc: Harness, action: Watched
) -> None:
    before = put_in_state(rpc, 3, "active")
    slow_action(action[1], latency_ms=5000)
    pending = rpc.stub.TriggerSchedule.future(pb.TriggerScheduleRequest(avatar_id=3), timeout=30)
    stats = SimulatorControl(action[1].address).stats
    wait_until(lambda: stats().calls_per_avatar.get(3) == 1, WAIT_S, "Action to be called")
    assert pending.cancel()
    assert not action[0].next_call().caller_stayed
    entry = assert_recorded_as_a_failure(rpc, 3, before)
    assert "Action call cancelled: the caller went away" in entry.error


def test_a_cut_trigger_of_a_paused_avatar_leaves_it_paused_and_out_of_the_index(
    rpc: Harness, action: Watched
) -> None:
    before = put_in_state(rpc, 4, "paused")
    _, call = trigger_past_deadline(rpc, action, 4, SHORT_DEADLINE_S)
    assert not call.caller_stayed
    assert_recorded_as_a_failure(rpc, 4, before)
    after = rpc.store.get(4)
    assert (after.status, after.pause_reason) == ("paused", "user")
    assert after.next_schedule_time == before.next_schedule_time  # a failure moves no paused time
    assert (rpc.index.due_score(4), rpc.index.is_inflight(4)) == (None, False)


def test_a_trigger_that_overruns_the_server_timeout_cancels_action(
    harnesses: Callable[..., Harness], action: Watched
) -> None:
    rpc = harnesses(server_ms=300, action_ms=5000)
    before = put_in_state(rpc, 5, "active")
    code, call = trigger_past_deadline(rpc, action, 5, 30)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert call.arrived_with_s <= 0.3 + WIRE_SLACK_S and not call.caller_stayed
    assert_recorded_as_a_failure(rpc, 5, before)


def test_a_trigger_whose_deadline_is_long_enough_succeeds(rpc: Harness, action: Watched) -> None:
    before = put_in_state(rpc, 6, "active")
    slow_action(action[1], latency_ms=300)
    reply = trigger(rpc, 6, 8)
    assert reply.code == 0 and reply.action_id > 0
    assert action[0].next_call().caller_stayed
    [entry] = rpc.store.history(6, 10)
    assert (entry.outcome, entry.action_id) == ("success", reply.action_id)
    assert rpc.store.get(6).schedule_count == before.schedule_count + 1
    rpc.assert_index_matches_mysql()


# -- the client alone ------------------------------------------------------------------


def test_a_call_for_a_caller_already_gone_is_cancelled_at_once(
    action: Watched,
) -> None:
    slow_action(action[1], latency_ms=5000)
    gone = Caller(timeout_s=30, on_end=lambda callback: False)  # add_callback after the end
    client = ActionClient(RpcClientConf(endpoints=(action[1].address,), timeout_ms=30_000))
    try:
        with pytest.raises(DownstreamError, match="the caller went away") as raised:
            client.schedule_action(1, "1:1", "manual", caller=gone)
    finally:
        client.close()
    assert raised.value.unavailable


def test_a_call_for_a_caller_gets_the_callers_timeout_not_action_rpcs(
    action: Watched,
) -> None:
    staying = Caller(timeout_s=2.0, on_end=lambda callback: True)
    client = ActionClient(RpcClientConf(endpoints=(action[1].address,), timeout_ms=30_000))
    try:
        assert client.schedule_action(1, "1:2", "manual", caller=staying).action_id > 0
        assert client.schedule_action(1, "1:3", "manual").action_id > 0
    finally:
        client.close()
    assert action[0].next_call().arrived_with_s <= 2.0 + WIRE_SLACK_S
    assert action[0].next_call().arrived_with_s > 2.0  # the plain call has ActionRpc's 30 s


# -- the real process tree ---------------------------------------------------------------


@pytest.mark.timeout(240)
def test_the_service_records_a_trigger_cut_by_its_callers_deadline_as_a_failure(
    tmp_path: Any,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
    index: DelayIndex,
) -> None:
    simulator = Simulator("action", tmp_path).start()
    running = None
    try:
        SimulatorControl(simulator.address).configure(latency_ms=SLOW_ACTION_MS)
        settings = dict(min_h=1, max_h=2, retry_s=3600, action_timeout_ms=5000, lease_s=10)
        running = start_service(
            tmp_path, mariadb, redis_server, database, redis_key, simulator, **settings
        )
        running.enable(41)
        stub = running.stub()
        with pytest.raises(grpc.RpcError) as raised:
            stub.TriggerSchedule(pb.TriggerScheduleRequest(avatar_id=41), timeout=SHORT_DEADLINE_S)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        [cut] = wait_until(lambda: running.history(41), 30, "the cut trigger's record")
        assert cut[:2] == ("failure", "manual")
        row = running.row(41)
        assert (row["status"], row["schedule_count"], row["failed_count"]) == ("active", 0, 1)
        assert row["last_schedule_time"] is None and row["last_error"]

        # A caller that waits long enough gets its action (the server's Timeout is 2 s).
        SimulatorControl(simulator.address).configure(latency_ms=800)
        reply = stub.TriggerSchedule(pb.TriggerScheduleRequest(avatar_id=41), timeout=10)
        assert reply.code == 0 and reply.action_id > 0
        assert [h[0] for h in running.history(41)] == ["failure", "success"]
        row = running.row(41)
        assert (row["schedule_count"], row["failed_count"]) == (1, 0)
        assert not index.is_inflight(41)
        next_time = row["next_schedule_time"].replace(tzinfo=timezone.utc)  # loc is UTC
        assert index.due_score(41) == next_time.timestamp()
        assert running.action_stats().calls_per_avatar[41] == 2
    finally:
        if running is not None:
            running.service.stop()
        simulator.stop()
