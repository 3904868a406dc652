"""The adaptive breaker sits in every Action and Diary call, as in go-zero's zrpc client:
a failing service is soon called only a few times a second, the rest dropped locally."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from me2_devkit.simulators import ActionSimulator, serve
from me2_devkit.testing.servers import free_port
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clients.breaker import BreakerOpen
from me2_scheduler.config import RpcClientConf
from me2_scheduler.errors import DownstreamError

CALLS = 60


def rejections(service: str) -> float:
    value = REGISTRY.get_sample_value("scheduler_breaker_rejections_total", {"service": service})
    return value or 0.0


def call_many(client: ActionClient, calls: int) -> tuple[int, int, list[DownstreamError]]:
    """(answered, dropped by the breaker, errors from the wire) over ``calls`` calls."""
    answered, dropped, wire = 0, 0, []
    for n in range(calls):
        try:
            client.schedule_action(1, f"1:{n}", "auto")
            answered += 1
        except BreakerOpen:
            dropped += 1
        except DownstreamError as exc:
            wire.append(exc)
    return answered, dropped, wire


def test_calls_to_an_action_that_is_down_are_soon_dropped_locally_and_counted() -> None:
    conf = RpcClientConf(endpoints=(f"127.0.0.1:{free_port()}",), timeout_ms=500)
    before = rejections("Action")
    with ActionClient(conf) as client:
        answered, dropped, wire = call_many(client, CALLS)
    assert answered == 0
    assert dropped > 0, "every call went to the dead endpoint"
    assert len(wire) + dropped == CALLS
    assert all(exc.unavailable and exc.code == grpc.StatusCode.UNAVAILABLE for exc in wire)
    assert rejections("Action") - before == dropped


def test_a_dropped_call_says_the_breaker_is_open_and_counts_as_unavailable() -> None:
    conf = RpcClientConf(endpoints=(f"127.0.0.1:{free_port()}",), timeout_ms=500)
    with ActionClient(conf) as client:
        for n in range(CALLS):
            try:
                client.schedule_action(1, f"1:{n}", "auto")
            except BreakerOpen as exc:
                assert "breaker is open" in str(exc)
                assert exc.unavailable
                return
            except DownstreamError:
                continue
    pytest.fail("no call was dropped by the breaker")


def test_a_healthy_action_is_never_dropped_even_when_it_answers_errors_of_its_own() -> None:
    # An application error (a non-zero code in the response) is an answer: accepted.
    running = serve(ActionSimulator(latency_ms=0, fail_rate=1.0, seed=1), "127.0.0.1:0")
    try:
        conf = RpcClientConf(endpoints=(running.address,), timeout_ms=2000)
        with ActionClient(conf) as client:
            answered, dropped, wire = call_many(client, CALLS)
    finally:
        running.stop()
    assert (answered, dropped) == (0, 0)
    assert len(wire) == CALLS and all(exc.code is None for exc in wire)
