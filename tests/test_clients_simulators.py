"""Action and Diary clients against the simulators, in-process and as CLI subprocesses."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from me2_devkit.simulators import (
    ACTION_TYPES,
    SIMULATED_FAILURE,
    ActionSimulator,
    DiarySimulator,
    SimulatorControl,
    serve,
)
from me2_scheduler.clients import ActionClient, DiaryClient, resolve_target
from me2_scheduler.config import EtcdConf, RpcClientConf
from me2_scheduler.errors import DownstreamError, SchedulerError
from tests.fixtures_simulators import (
    DATE,
    ROOT,
    action_client,
    cli_simulator,
    conf,
    running,
)
from tests.support import wait_until

# --- endpoint resolution --------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "target"),
    [
        (RpcClientConf(endpoints=("10.0.0.1:8007",)), "ipv4:10.0.0.1:8007"),
        (
            RpcClientConf(endpoints=("10.0.0.1:8007", "10.0.0.2:8007")),
            "ipv4:10.0.0.1:8007,10.0.0.2:8007",
        ),
        (RpcClientConf(endpoints=("[::1]:8007",)), "ipv6:[::1]:8007"),
        (RpcClientConf(target="direct:///10.0.0.1:1,10.0.0.2:2"), "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (RpcClientConf(target="dns:///action.svc:8007"), "dns:///action.svc:8007"),
        (RpcClientConf(target="action.svc:8007"), "dns:///action.svc:8007"),
        (
            RpcClientConf(endpoints=("10.0.0.1:1",), target="etcd://x", etcd=EtcdConf(("h:1",))),
            "ipv4:10.0.0.1:1",
        ),
        (
            RpcClientConf(etcd=EtcdConf(hosts=("127.0.0.1:2379",), key="action.rpc")),
            "etcd://127.0.0.1:2379/action.rpc",
        ),
        (
            RpcClientConf(target="etcd://h1:2379,h2:2379/action.rpc"),
            "etcd://h1:2379,h2:2379/action.rpc",
        ),
        (
            RpcClientConf(target="etcd://h1:2379/action.rpc", etcd=EtcdConf(("h:1",), "other")),
            "etcd://h1:2379/action.rpc",
        ),
    ],
)
def test_resolve_target_maps_zrpc_client_config_to_a_grpc_target(config, target):
    assert resolve_target(config) == target


def test_localhost_endpoint_resolves_to_its_ipv4_address():
    assert resolve_target(RpcClientConf(endpoints=("localhost:8007",))) == "ipv4:127.0.0.1:8007"


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (RpcClientConf(target="etcd://127.0.0.1:2379"), "must be etcd://"),
        (RpcClientConf(etcd=EtcdConf(hosts=("127.0.0.1:2379",))), "Etcd.Key"),
        (RpcClientConf(target="k8s://ns/action:8007"), "unsupported target scheme"),
        (RpcClientConf(), "no Endpoints"),
        (RpcClientConf(endpoints=("no-port",)), "not host:port"),
        (RpcClientConf(target="direct:///"), "no endpoint"),
    ],
)
def test_resolve_target_rejects_what_it_cannot_reach(config, problem):
    with pytest.raises(SchedulerError, match=problem):
        resolve_target(config)


def test_client_creates_no_channel_until_the_first_call():
    client = ActionClient(RpcClientConf(target="k8s://ns/action:8007"))
    with pytest.raises(SchedulerError, match="unsupported target scheme"):
        client.schedule_action(1, "1:0", "auto")
    client.close()


# --- Action ---------------------------------------------------------------------------


def test_action_client_returns_what_the_simulator_did():
    with running(ActionSimulator(seed=3)) as sim, action_client(sim.address) as client:
        first = client.schedule_action(11, "11:1000", "auto")
        second = client.schedule_action(12, "12:1000", "manual")
        assert first.action_type in ACTION_TYPES
        assert second.action_type in ACTION_TYPES
        assert second.action_id > first.action_id > 0
        with SimulatorControl(sim.address) as control:
            stats = control.stats()
        assert stats.calls_per_avatar == {11: 1, 12: 1}
        assert stats.calls_per_key == {"11:1000": 1, "12:1000": 1}
        assert stats.total == 2


def test_failing_avatar_raises_a_downstream_error_that_is_not_unavailable():
    with (
        running(ActionSimulator(fail_avatars={7})) as sim,
        action_client(sim.address) as client,
    ):
        with pytest.raises(DownstreamError) as failed:
            client.schedule_action(7, "7:1", "auto")
        assert failed.value.unavailable is False
        assert str(failed.value) == SIMULATED_FAILURE
        assert client.schedule_action(8, "8:1", "auto").action_id > 0


def test_stopped_action_server_raises_unavailable():
    sim = serve(ActionSimulator(), "127.0.0.1:0")
    address = sim.address
    sim.stop(grace=0)
    with action_client(address) as client, pytest.raises(DownstreamError) as failed:
        client.schedule_action(1, "1:1", "auto")
    assert failed.value.unavailable is True
    assert "Action call failed with UNAVAILABLE" in str(failed.value)


def test_latency_above_the_client_timeout_raises_deadline_exceeded_as_unavailable():
    with (
        running(ActionSimulator(latency_ms=3000)) as sim,
        action_client(sim.address, timeout_ms=200) as client,
        pytest.raises(DownstreamError) as failed,
    ):
        client.schedule_action(1, "1:1", "auto")
    assert failed.value.unavailable is True
    assert "DEADLINE_EXCEEDED" in str(failed.value)


def test_repeated_idempotency_key_is_counted_and_gets_the_first_answer():
    with running(ActionSimulator(seed=1)) as sim, action_client(sim.address) as client:
        first = client.schedule_action(5, "5:1700000000000", "auto")
        repeat = client.schedule_action(5, "5:1700000000000", "auto")
        other = client.schedule_action(5, "5:1700000300000", "auto")
        assert repeat == first
        assert other.action_id != first.action_id
        with SimulatorControl(sim.address) as control:
            stats = control.stats()
            assert stats.calls_per_key == {"5:1700000000000": 2, "5:1700000300000": 1}
            assert stats.calls_per_avatar == {5: 3}
            control.reset()
            assert control.stats().total == 0


def test_configure_changes_the_fail_rate_of_a_running_simulator():
    with cli_simulator("action", "--fail-rate", "1.0", "--seed", "4") as (_, address):
        client, control = ActionClient(conf(address)), SimulatorControl(address)
        try:
            with pytest.raises(DownstreamError, match=SIMULATED_FAILURE):
                client.schedule_action(1, "1:1", "auto")
            control.configure(fail_rate=0.0)
            assert client.schedule_action(1, "1:2", "auto").action_type in ACTION_TYPES
            control.configure(fail_avatars=[1])
            with pytest.raises(DownstreamError, match=SIMULATED_FAILURE):
                client.schedule_action(1, "1:3", "auto")
            control.configure(fail_avatars=[])
            assert client.schedule_action(1, "1:4", "auto").action_id > 0
        finally:
            client.close()
            control.close()


def test_cli_fail_avatars_fail_and_sigterm_stops_the_simulator_with_exit_zero():
    with cli_simulator("action", "--fail-avatars", "7,9", "--latency-ms", "5") as (proc, address):
        with action_client(address) as client:
            for avatar_id in (7, 9):
                with pytest.raises(DownstreamError) as failed:
                    client.schedule_action(avatar_id, f"{avatar_id}:1", "auto")
                assert failed.value.unavailable is False
            assert client.schedule_action(8, "8:1", "auto").action_id > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["diary", "--hang-avatars", "x"], "comma-separated list of avatar ids"),
        (["action", "--listen", "nohost"], "is not host:port"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_usage_error(args: list[str], problem: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "me2_devkit.cli", "simulate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert problem in done.stderr


def test_two_endpoints_share_the_calls_round_robin():
    with running(ActionSimulator()) as one, running(ActionSimulator()) as two:
        endpoints = (one.address, f"localhost:{two.port}")
        client = ActionClient(RpcClientConf(endpoints=endpoints))
        controls = [SimulatorControl(one.address), SimulatorControl(two.address)]
        seq = iter(range(1, 10_000))

        def both_called() -> bool:
            client.schedule_action(1, f"1:{next(seq)}", "auto")
            return all(control.stats().total > 0 for control in controls)

        try:
            wait_until(both_called, 10, "calls on both endpoints")
        finally:
            client.close()
            for control in controls:
                control.close()


# --- Diary ----------------------------------------------------------------------------


def test_diary_simulator_counts_calls_per_avatar_and_date():
    with running(DiarySimulator()) as sim:
        client = DiaryClient(conf(sim.address))
        try:
            ids = [client.generate(3, DATE), client.generate(3, DATE), client.generate(4, DATE)]
            ids.append(client.generate(3, "2025-01-03"))
        finally:
            client.close()
        assert len(set(ids)) == 4
        with SimulatorControl(sim.address) as control:
            stats = control.stats()
        assert stats.calls_per_key == {f"3:{DATE}": 2, f"4:{DATE}": 1, "3:2025-01-03": 1}
        assert stats.calls_per_avatar == {3: 3, 4: 1}


def test_diary_call_for_a_hanging_avatar_ends_at_the_client_timeout():
    with running(DiarySimulator(hang_avatars={5})) as sim:
        client = DiaryClient(conf(sim.address, timeout_ms=60_000))
        try:
            with pytest.raises(DownstreamError) as failed:
                client.generate(5, DATE, timeout_s=0.3)
            assert failed.value.unavailable is True
            assert "Diary call failed with DEADLINE_EXCEEDED" in str(failed.value)
            assert client.generate(6, DATE) > 0
        finally:
            client.close()


def test_diary_failure_carries_the_diary_message():
    with cli_simulator("diary", "--fail-avatars", "2", "--hang-avatars", "9") as (proc, address):
        client = DiaryClient(conf(address, timeout_ms=300))
        try:
            with pytest.raises(DownstreamError, match=SIMULATED_FAILURE) as failed:
                client.generate(2, DATE)
            assert failed.value.unavailable is False
            with pytest.raises(DownstreamError, match="DEADLINE_EXCEEDED"):
                client.generate(9, DATE)
        finally:
            client.close()
        with SimulatorControl(address) as control:
            assert control.stats().calls_per_key == {f"2:{DATE}": 1, f"9:{DATE}": 1}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0


def test_closed_client_can_be_used_again():
    with running(DiarySimulator()) as sim:
        client = DiaryClient(conf(sim.address))
        first = client.generate(1, DATE)
        client.close()
        assert client.generate(1, DATE) > first
        client.close()
