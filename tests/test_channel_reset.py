"""A client channel whose connections went silent is closed and opened again, on real servers.

The peers (Action and Diary simulators, a real etcd) sit behind a
``SilentProxy``: it silences the connections open now (they stay open and
never answer again), and can hold new ones silent for a while, as a
middlebox that forgot its connections does. gRPC alone would keep calling
over the silent connection until a keepalive ping fails, minutes later
against a go-zero server; the reset after deadlines in a row leaves it
within a few timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from me2_devkit.simulators import ActionSimulator, DiarySimulator, SimulatorControl, serve
from me2_devkit.testing.etcd import EtcdServer
from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_devkit.testing.silent_proxy import SilentProxy
from me2_scheduler import health
from me2_scheduler.channel_recovery import RESET_AFTER_DEADLINES, ChannelRecovery
from me2_scheduler.clients import ActionClient, DiaryClient
from me2_scheduler.clients.channels import CHANNEL_OPTIONS
from me2_scheduler.config import EtcdConf, RpcClientConf
from me2_scheduler.discovery.etcd_client import EtcdClient, EtcdError
from me2_scheduler.errors import DownstreamError
from me2_scheduler.health import State

from .fixtures_metrics import get
from .fixtures_service import start_service
from .support import wait_until

TIMEOUT_MS = 300
# Deadlines to reset, the breaker's one probe a second meanwhile, and a reconnect.
RECOVERY_BOUND_S = 20.0
GO_ZERO_MIN_PING_S = 300  # grpc-go's default EnforcementPolicy.MinTime


@pytest.fixture
def proxied_action() -> Iterator[SilentProxy]:
    simulator = serve(ActionSimulator(seed=3), "127.0.0.1:0")
    proxy = SilentProxy(simulator.address).start()
    yield proxy
    proxy.stop()
    simulator.stop(grace=0)


@pytest.fixture
def client(proxied_action: SilentProxy) -> Iterator[ActionClient]:
    """An Action client calling through ``proxied_action``; closed after."""
    made = ActionClient(RpcClientConf(endpoints=(proxied_action.address,), timeout_ms=TIMEOUT_MS))
    yield made
    made.close()


def attempt(call: Callable[[], object]) -> bool:
    """Whether one call succeeds; a failure is what the test expects for a while."""
    try:
        call()
    except (DownstreamError, EtcdError):
        return False
    return True


def wait_for_a_success(
    client: ActionClient, avatar_id: int, keys: Iterator[int], what: str
) -> None:
    """Call Action for ``avatar_id`` with a fresh key each time until a call succeeds."""
    wait_until(
        lambda: attempt(
            lambda: client.schedule_action(avatar_id, f"{avatar_id}:{next(keys)}", "auto")
        ),
        RECOVERY_BOUND_S,
        what,
    )


def state_and_reason(name: str) -> tuple[State, str] | None:
    """What this process's health board says of ``name``."""
    status = health.board().snapshot().dependencies.get(name)
    return None if status is None else (status.state, status.reason)


def test_keepalive_stays_within_what_a_go_zero_server_accepts() -> None:
    options = dict(CHANNEL_OPTIONS)
    assert options["grpc.keepalive_time_ms"] >= GO_ZERO_MIN_PING_S * 1000
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 20_000
    assert options["grpc.use_local_subchannel_pool"] == 1


def test_action_calls_recover_after_the_existing_connections_went_silent(
    proxied_action: SilentProxy, client: ActionClient
) -> None:
    assert attempt(lambda: client.schedule_action(1, "1:1", "auto"))
    assert proxied_action.silence_existing() == 1
    proxied_action.hold_new(True)  # for a while nothing answers at all
    key = iter(range(2, 10_000))

    def reset_while_silent() -> bool:
        assert not attempt(lambda: client.schedule_action(1, f"1:{next(key)}", "auto"))
        return proxied_action.accepted >= 2  # a second connection: the channel was reset

    wait_until(reset_while_silent, RECOVERY_BOUND_S, "a reset while nothing answers")
    proxied_action.hold_new(False)  # new connections work again; the old stay silent
    wait_for_a_success(client, 1, key, "an Action call to succeed over a new connection")
    # The reset closed the channel it replaced, and with it the silent connection.
    wait_until(lambda: 1 not in proxied_action.open_numbers(), 10, "the first one closed")


def test_a_client_with_calls_missing_their_deadline_is_reported_degraded_until_it_recovers(
    proxied_action: SilentProxy, client: ActionClient
) -> None:
    assert attempt(lambda: client.schedule_action(2, "2:1", "auto"))
    proxied_action.silence_existing()
    assert not attempt(lambda: client.schedule_action(2, "2:2", "auto"))
    assert client.channel_trouble() == "1 deadline in a row"
    assert state_and_reason("action") == (State.DEGRADED, "1 deadline in a row")

    wait_for_a_success(client, 2, iter(range(3, 10_000)), "recovery")
    assert client.channel_trouble() == ""
    assert state_and_reason("action") == (State.OK, "")


def test_diary_calls_recover_after_the_existing_connections_went_silent() -> None:
    simulator = serve(DiarySimulator(seed=4), "127.0.0.1:0")
    proxy = SilentProxy(simulator.address).start()
    client = DiaryClient(RpcClientConf(endpoints=(proxy.address,), timeout_ms=TIMEOUT_MS))
    try:
        assert attempt(lambda: client.generate(1, "2025-01-02"))
        proxy.silence_existing()
        assert not attempt(lambda: client.generate(2, "2025-01-02"))
        wait_until(
            lambda: attempt(lambda: client.generate(3, "2025-01-02")),
            RECOVERY_BOUND_S,
            "a Diary call to succeed over a new connection",
        )
    finally:
        client.close()
        proxy.stop()
        simulator.stop(grace=0)


def test_etcd_calls_recover_after_the_existing_connections_went_silent(etcd: EtcdServer) -> None:
    proxy = SilentProxy(etcd.address).start()
    client = EtcdClient(EtcdConf(hosts=(proxy.address,), key="unused"), call_timeout_s=0.5)
    try:
        wait_until(lambda: attempt(lambda: client.put("reset-test/a", "1")), 10, "a first put")
        proxy.silence_existing()
        assert not attempt(lambda: client.get_prefix("reset-test/"))
        assert state_and_reason("etcd") == (State.DEGRADED, "1 deadline in a row")
        wait_until(
            lambda: attempt(lambda: client.get_prefix("reset-test/")),
            RECOVERY_BOUND_S,
            "an etcd call to succeed over a new connection",
        )
        assert client.get_prefix("reset-test/")[0] == {"reset-test/a": "1"}
        assert state_and_reason("etcd") == (State.OK, "")
    finally:
        client.close()
        proxy.stop()


# --- the real process tree ---------------------------------------------------------------

FAULT_S = 10.0  # as in the fault run: Action's connections silent for 10 s, new ones too
DISPATCH_RECOVERY_S = 30.0


@dataclass
class Reached:
    """Where the service reaches Action (``start_service`` takes its address and port)."""

    address: str

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


def test_dispatch_recovers_by_itself_after_actions_connections_went_silent_for_10_s(
    tmp_path: Path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
) -> None:
    simulator = serve(ActionSimulator(seed=9), "127.0.0.1:0")
    proxy = SilentProxy(simulator.address).start()
    control = SimulatorControl(simulator.address)  # straight to the simulator, never silent
    try:
        through_proxy = Reached(proxy.address)
        settings = {"action_timeout_ms": 500, "workers": 2, "max_failures": 1000}  # no auto-pause
        running = start_service(
            tmp_path, mariadb, redis_server, database, redis_key, through_proxy, **settings
        )
        url = f"http://127.0.0.1:{running.metrics_port}/healthz"
        try:
            running.enable(*range(1, 21))
            wait_until(lambda: control.stats().total >= 20, 60, "dispatches before the fault")

            proxy.hold_new(True)
            proxy.silence_existing()
            fault_ends = time.monotonic() + FAULT_S
            seen: list[tuple[int, str]] = []

            def fault_over() -> bool:  # watching /healthz while the fault lasts
                seen.append(get(url))
                return time.monotonic() >= fault_ends

            wait_until(fault_over, FAULT_S + 10, "the end of the fault")
            degraded = [
                (status, line)
                for status, body in seen
                for line in body.splitlines()
                if line.startswith("degraded: action: ")
            ]
            assert degraded, seen[-1]
            assert {status for status, _ in degraded} == {200}
            assert any("deadline" in line for _, line in degraded), degraded

            proxy.hold_new(False)  # new connections work again; the old ones stay silent
            before = control.stats().total

            def recovered() -> bool:
                status, body = get(url)
                return control.stats().total >= before + 20 and (status, body) == (200, "ok\n")

            wait_until(recovered, DISPATCH_RECOVERY_S, "dispatches through new connections")
        finally:
            running.service.stop()
    finally:
        control.close()
        proxy.stop()
        simulator.stop(grace=0)


# --- the bookkeeping alone ----------------------------------------------------------------


class Resets:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> bool:
        self.count += 1
        return True


def test_the_channel_is_reset_at_the_nth_deadline_in_a_row_and_not_before() -> None:
    recovery, resets, channel = ChannelRecovery("Action", "test-a"), Resets(), object()
    for _ in range(RESET_AFTER_DEADLINES - 1):
        recovery.missed_deadline(channel, "here", resets)
    assert resets.count == 0
    recovery.missed_deadline(channel, "here", resets)
    assert resets.count == 1
    assert recovery.reason() == f"{RESET_AFTER_DEADLINES} deadlines in a row, channel reset"


def test_an_answer_in_between_starts_the_count_again() -> None:
    recovery, resets, channel = ChannelRecovery("Action", "test-b"), Resets(), object()
    for _ in range(3):
        for _ in range(RESET_AFTER_DEADLINES - 1):
            recovery.missed_deadline(channel, "here", resets)
        recovery.answered(channel)
    assert resets.count == 0
    assert recovery.reason() == ""


def test_deadlines_count_per_channel_towards_its_reset() -> None:
    recovery, resets = ChannelRecovery("Action", "test-c"), Resets()
    first, second = object(), object()
    for _ in range(RESET_AFTER_DEADLINES - 1):
        recovery.missed_deadline(first, "a", resets)
        recovery.missed_deadline(second, "b", resets)
    assert resets.count == 0
    assert recovery.reason() == f"{2 * (RESET_AFTER_DEADLINES - 1)} deadlines in a row"


def test_a_failure_other_than_a_deadline_is_trouble_until_an_answer() -> None:
    recovery = ChannelRecovery("Action", "test-d")
    recovery.failed("Action call failed with UNAVAILABLE: connection refused")
    assert state_and_reason("test-d") == (
        State.DEGRADED,
        "Action call failed with UNAVAILABLE: connection refused",
    )
    recovery.answered(object())
    assert state_and_reason("test-d") == (State.OK, "")


def test_a_reset_refused_because_the_channel_is_gone_is_not_counted() -> None:
    recovery, channel = ChannelRecovery("Action", "test-e"), object()
    for _ in range(RESET_AFTER_DEADLINES):
        recovery.missed_deadline(channel, "here", lambda: False)
    assert "channel reset" not in recovery.reason()
