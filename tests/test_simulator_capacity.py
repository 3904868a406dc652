"""The simulators report the calls in flight and answer RESOURCE_EXHAUSTED past a capacity."""

from __future__ import annotations

import signal

import pytest

from me2_devkit.simulators import (
    ActionSimulator,
    SimulatorControl,
)
from me2_scheduler.clients import DiaryClient
from me2_scheduler.errors import DownstreamError
from tests.fixtures_simulators import (
    DATE,
    action_client,
    cli_simulator,
    conf,
    hanging_calls,
    running,
)
from tests.support import wait_until

# --- calls in flight and capacity -------------------------------------------------------


def test_the_simulator_reports_the_calls_in_flight_now_and_their_peak():
    with running(ActionSimulator()) as sim, SimulatorControl(sim.address) as control:
        control.configure(hang=True)
        with hanging_calls(sim.address, 30):
            wait_until(lambda: control.stats().in_flight == 30, 10, "30 calls in flight")
            assert control.stats().peak_in_flight == 30
        wait_until(lambda: control.stats().in_flight == 0, 10, "the cancelled calls ended")
        stats = control.stats()
        assert stats.peak_in_flight == 30 and stats.total == 30 and stats.rejected == 0
        control.reset()
        assert control.stats().peak_in_flight == 0


def test_the_default_server_does_not_cap_hundreds_of_sleeping_calls():
    # The benchmark holds up to 400 Action calls in flight: the simulator must
    # hold them all at once, not queue them behind a small thread pool.
    with running(ActionSimulator()) as sim, SimulatorControl(sim.address) as control:
        control.configure(hang=True)
        with hanging_calls(sim.address, 500):
            wait_until(lambda: control.stats().in_flight == 500, 60, "500 calls in flight")


def test_a_call_beyond_the_capacity_is_answered_resource_exhausted_at_once():
    with (
        running(ActionSimulator()) as sim,
        SimulatorControl(sim.address) as control,
        action_client(sim.address, timeout_ms=30_000) as client,
    ):
        control.configure(hang=True, capacity=3)
        with hanging_calls(sim.address, 3):
            wait_until(lambda: control.stats().in_flight == 3, 10, "3 calls in flight")
            with pytest.raises(DownstreamError, match="RESOURCE_EXHAUSTED") as failed:
                client.schedule_action(9, "9:1", "auto")
            assert failed.value.code.name == "RESOURCE_EXHAUSTED"
            stats = control.stats()
            assert stats.rejected == 1 and stats.peak_in_flight == 3
            assert "9:1" not in stats.calls_per_key  # it performed nothing
        wait_until(lambda: control.stats().in_flight == 0, 10, "the hanging calls ended")
        control.configure(hang=False)
        assert client.schedule_action(9, "9:2", "auto").action_id > 0
        control.configure(capacity=0, hang=True)
        with hanging_calls(sim.address, 5):
            wait_until(lambda: control.stats().in_flight == 5, 10, "5 calls once unlimited")


def test_cli_capacity_and_max_concurrency_shape_the_server():
    args = ("--capacity", "2", "--max-concurrency", "4")
    with cli_simulator("diary", *args) as (proc, address), SimulatorControl(address) as control:
        control.configure(hang=True)
        with hanging_calls(address, 2, kind="diary"):
            wait_until(lambda: control.stats().in_flight == 2, 10, "2 diary calls in flight")
            client = DiaryClient(conf(address, timeout_ms=10_000))
            try:
                with pytest.raises(DownstreamError, match="RESOURCE_EXHAUSTED"):
                    client.generate(7, DATE)
            finally:
                client.close()
            assert control.stats().rejected == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
