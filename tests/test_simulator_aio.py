"""The standalone simulator process (``me2-dev simulate``) serves on grpc.aio and answers,
counts and stops as the in-process sync server does; checked over real sockets."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from me2_devkit.simulators import (
    OVER_CAPACITY,
    SIMULATED_FAILURE,
    ActionSimulator,
    SimulatorControl,
)
from me2_scheduler.protos import action_pb2, action_pb2_grpc, diary_pb2, diary_pb2_grpc
from tests.fixtures_simulators import DATE, cli_simulator, hanging_calls, running
from tests.support import wait_until

Stubs = tuple[action_pb2_grpc.ActionStub, SimulatorControl]


@contextmanager
def stubs(address: str) -> Iterator[Stubs]:
    """An Action stub and a Control client on ``address``."""
    channel = grpc.insecure_channel(address)
    try:
        with SimulatorControl(address) as control:
            yield action_pb2_grpc.ActionStub(channel), control
    finally:
        channel.close()


def act(stub: action_pb2_grpc.ActionStub, avatar_id: int, key: str = "", timeout: float = 10):
    request = action_pb2.ScheduleActionRequest(avatar_id=avatar_id, idempotency_key=key)
    return stub.ScheduleAction(request, timeout=timeout)


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for {pid}")


# --- answers -----------------------------------------------------------------------------


def test_a_repeated_key_gets_the_first_success_again():
    with cli_simulator("action", "--seed", "1") as (_, address), stubs(address) as (stub, control):
        first = act(stub, 5, "5:1")
        assert first.code == 0 and first.action_id > 0 and first.action_type
        assert act(stub, 5, "5:1") == first
        assert act(stub, 5, "5:2").action_id != first.action_id
        assert act(stub, 6).action_id > 0  # no key: counted per avatar only
        stats = control.stats()
        assert stats.calls_per_key == {"5:1": 2, "5:2": 1}
        assert stats.calls_per_avatar == {5: 3, 6: 1} and stats.total == 4
        assert stats.in_flight == 0 and stats.peak_in_flight == 1 and stats.rejected == 0


def test_the_process_answers_as_the_sync_server_does_for_the_same_seed():
    calls = [(1, "1:1"), (2, "2:1"), (1, "1:1"), (3, ""), (2, "2:2"), (1, "1:1"), (4, "4:1")]

    def answers_and_stats(address: str) -> tuple[list, object]:
        with stubs(address) as (stub, control):
            return [act(stub, avatar_id, key) for avatar_id, key in calls], control.stats()

    with running(ActionSimulator(seed=9, fail_rate=0.5)) as sync:
        expected = answers_and_stats(sync.address)
    with cli_simulator("action", "--seed", "9", "--fail-rate", "0.5") as (_, address):
        assert answers_and_stats(address) == expected
    assert {answer.code for answer in expected[0]} == {0, 1}  # both branches were taken


def test_diary_calls_are_counted_per_avatar_and_date():
    with cli_simulator("diary") as (_, address), SimulatorControl(address) as control:
        channel = grpc.insecure_channel(address)
        stub = diary_pb2_grpc.DiaryStub(channel)
        ids = [
            stub.GenerateAvatarDiary(
                diary_pb2.GenerateAvatarDiaryRequest(avatar_id=avatar_id, date=DATE), timeout=10
            ).diary_id
            for avatar_id in (3, 3, 4)
        ]
        channel.close()
        assert ids == [1, 2, 3]
        stats = control.stats()
        assert stats.calls_per_key == {f"3:{DATE}": 2, f"4:{DATE}": 1} and stats.total == 3


def test_failures_answer_code_1_and_are_not_remembered():
    args = ("--fail-rate", "1", "--fail-avatars", "7")
    with cli_simulator("action", *args) as (_, address), stubs(address) as (stub, control):
        failed = act(stub, 1, "1:1")
        assert (failed.code, failed.message, failed.action_id) == (1, SIMULATED_FAILURE, 0)
        control.configure(fail_rate=0.0)
        assert act(stub, 1, "1:1").code == 0  # the failure performed nothing: the repeat acts
        assert act(stub, 7, "7:1").code == 1  # --fail-avatars still fails
        control.configure(fail_avatars=[])
        assert act(stub, 7, "7:1").code == 0
        assert control.stats().calls_per_key == {"1:1": 2, "7:1": 2}


# --- waiting, capacity and callers that leave ---------------------------------------------


def test_a_call_beyond_the_capacity_is_answered_resource_exhausted_at_once():
    with (
        cli_simulator("action", "--capacity", "2") as (_, address),
        stubs(address) as (stub, control),
    ):
        control.configure(hang=True)
        with hanging_calls(address, 2):
            wait_until(lambda: control.stats().in_flight == 2, 10, "2 calls in flight")
            with pytest.raises(grpc.RpcError) as refused:
                act(stub, 9, "9:1", timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.value.details() == OVER_CAPACITY
            stats = control.stats()
            assert stats.rejected == 1 and stats.peak_in_flight == 2
            assert "9:1" not in stats.calls_per_key  # it performed nothing
        wait_until(lambda: control.stats().in_flight == 0, 10, "the hanging calls ended")
        control.configure(hang=False, capacity=0)
        assert act(stub, 9, "9:1").code == 0


def test_latency_holds_the_calls_in_flight_until_it_has_passed():
    with (
        cli_simulator("action", "--latency-ms", "2000") as (_, address),
        stubs(address) as (stub, control),
    ):
        requests = [
            action_pb2.ScheduleActionRequest(avatar_id=i, idempotency_key=f"{i}:1")
            for i in range(1, 21)
        ]
        pending = [stub.ScheduleAction.future(request, timeout=30) for request in requests]
        wait_until(lambda: control.stats().in_flight == 20, 10, "20 calls waiting the latency")
        assert all(call.result().code == 0 for call in pending)
        stats = control.stats()
        assert stats.in_flight == 0 and stats.peak_in_flight == 20 and stats.total == 20


def test_a_hang_ends_at_the_callers_deadline():
    with cli_simulator("action") as (_, address), stubs(address) as (stub, control):
        control.configure(hang=True)
        with pytest.raises(grpc.RpcError) as ended:
            act(stub, 1, "1:1", timeout=0.5)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: control.stats().in_flight == 0, 10, "the hang to count as done")
        assert control.stats().calls_per_key == {"1:1": 1}
        control.configure(hang=False)
        assert act(stub, 1, "1:1").code == 0  # nothing was remembered for the gone caller


def test_cli_hang_avatars_hang_only_those_avatars():
    with cli_simulator("diary", "--hang-avatars", "4") as (_, address):
        channel = grpc.insecure_channel(address)
        stub = diary_pb2_grpc.DiaryStub(channel)
        with pytest.raises(grpc.RpcError) as ended:
            stub.GenerateAvatarDiary(diary_pb2.GenerateAvatarDiaryRequest(avatar_id=4), timeout=0.5)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        answer = stub.GenerateAvatarDiary(diary_pb2.GenerateAvatarDiaryRequest(avatar_id=5))
        channel.close()
        assert answer.code == 0 and answer.diary_id > 0


def test_cancelled_calls_leave_nothing_in_flight():
    with cli_simulator("action") as (_, address), SimulatorControl(address) as control:
        control.configure(hang=True)
        with hanging_calls(address, 5):
            wait_until(lambda: control.stats().in_flight == 5, 10, "5 calls in flight")
        wait_until(lambda: control.stats().in_flight == 0, 10, "the cancelled calls ended")
        stats = control.stats()
        assert stats.total == 5 and stats.peak_in_flight == 5 and stats.rejected == 0


def test_hundreds_of_waiting_calls_hold_no_thread_each():
    # The benchmark holds 400 calls in flight: they are tasks, not sleeping threads.
    with (
        cli_simulator("action", "--max-concurrency", "4") as (proc, address),
        SimulatorControl(address) as control,
    ):
        control.configure(hang=True)
        with hanging_calls(address, 500):
            wait_until(lambda: control.stats().in_flight == 500, 60, "500 calls in flight")
            assert threads_of(proc.pid) < 50


# --- Control ------------------------------------------------------------------------------


def test_reset_forgets_counts_and_answers_and_the_peak_restarts_from_the_calls_in_flight():
    with cli_simulator("action") as (_, address), stubs(address) as (stub, control):
        first = act(stub, 1, "1:1")
        control.configure(hang=True)
        with hanging_calls(address, 3):
            wait_until(lambda: control.stats().in_flight == 3, 10, "3 calls in flight")
            control.reset()
            stats = control.stats()
            assert (stats.total, stats.calls_per_key, stats.in_flight) == (0, {}, 3)
            assert stats.peak_in_flight == 3 and stats.rejected == 0
        wait_until(lambda: control.stats().in_flight == 0, 10, "the hanging calls ended")
        control.configure(hang=False)
        assert act(stub, 1, "1:1").action_id != first.action_id  # the answer was forgotten


def test_configure_keeps_the_fields_it_is_not_given():
    with (
        cli_simulator("action", "--fail-rate", "1") as (_, address),
        stubs(address) as (stub, control),
    ):
        control.configure(capacity=5)  # the fail rate stays
        assert act(stub, 1, "1:1").code == 1
        control.configure(fail_rate=0.0)
        assert act(stub, 1, "1:2").code == 0


# --- the process --------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_process_with_exit_zero_even_with_hanging_calls(signum):
    with cli_simulator("action") as (proc, address), SimulatorControl(address) as control:
        control.configure(hang=True)
        with hanging_calls(address, 3) as calls:
            wait_until(lambda: control.stats().in_flight == 3, 10, "3 calls in flight")
            proc.send_signal(signum)
            assert proc.wait(20) == 0
            assert all(call.exception() is not None for call in calls)
        assert proc.stderr.read() == ""  # no traceback from the cancelled calls
