"""During a MySQL or Redis fault the API answers 503 in time, in one sentence; after it, it serves.

The server runs in-process on real MariaDB and Redis, one of them behind a
``BlackholeProxy`` that accepts and never answers. Each call has a 10 s
deadline and the server's ``Timeout`` is its default 2 s, so an answer with a
code (not a DEADLINE_EXCEEDED status) shows the handler gave up in time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest

from me2_devkit.simulators import RunningSimulator, SimulatorControl
from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_scheduler import deadline
from me2_scheduler.config import MysqlConf, RedisConf
from me2_scheduler.dsn import parse_dsn
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.rpc_server.answers import io_budget_s
from me2_scheduler.rpc_server.interceptors import TimeoutInterceptor
from me2_scheduler.rpc_server.trigger import RECORDING_DELAYED
from me2_scheduler.schedule_policy import SchedulePolicy
from me2_scheduler.storage.mysql import MysqlStore

from .blackhole import BlackholeProxy, blackhole_proxy
from .fixtures_rpc import Harness, put_in_state
from .support import wait_until

RECOVERY_S = 30
WAIT_S = 10.0  # for what happens at once when all is well


def assert_unavailable(reply: Any, dependency: str) -> None:
    """A 503 whose one sentence names the dependency."""
    assert reply.code == 503, reply
    assert reply.message.startswith(f"storage unavailable: {dependency}"), reply.message
    assert "\n" not in reply.message and "Traceback" not in reply.message
    assert ". " not in reply.message.rstrip(".")


def serves(rpc: Harness, avatar_id: int) -> bool:
    return rpc.call("GetAvatarScheduleStatus", avatar_id=avatar_id).code == 0


@pytest.fixture
def mysql_proxy(mariadb: MariaDBServer) -> Iterator[BlackholeProxy]:
    with blackhole_proxy(mariadb.port) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy(redis_server: RedisServer) -> Iterator[BlackholeProxy]:
    with blackhole_proxy(redis_server.port) as proxy:
        yield proxy


def mysql_through(proxy: BlackholeProxy, database: str, params: str = "") -> MysqlConf:
    dsn = f"root@tcp({proxy.address})/{database}?parseTime=true{params}"
    return MysqlConf(data_source=dsn, dsn=parse_dsn(dsn))


def test_a_silent_mysql_answers_503_naming_it_then_serves_again(
    harnesses: Callable[..., Harness], mysql_proxy: BlackholeProxy, database: str
) -> None:
    rpc = harnesses(mysql=mysql_through(mysql_proxy, database))
    assert rpc.call("EnableAvatarSchedule", avatar_id=31).code == 0
    mysql_proxy.blackhole()
    assert_unavailable(rpc.call("GetAvatarScheduleStatus", avatar_id=31), "MySQL")
    assert_unavailable(rpc.call("PauseAvatarSchedule", avatar_id=31), "MySQL")
    mysql_proxy.heal()
    wait_until(lambda: serves(rpc, 31), RECOVERY_S, "the API to read MySQL again")
    assert rpc.call("PauseAvatarSchedule", avatar_id=31).code == 0
    rpc.assert_index_matches_mysql()


def test_a_blackhole_as_the_mysql_address_answers_503(
    harnesses: Callable[..., Harness], database: str
) -> None:
    with blackhole_proxy(None) as hole:
        rpc = harnesses(mysql=mysql_through(hole, database))
        assert_unavailable(rpc.call("EnableAvatarSchedule", avatar_id=32), "MySQL")


def test_a_silent_redis_answers_503_naming_it_then_serves_again(
    harnesses: Callable[..., Harness], redis_proxy: BlackholeProxy, redis_key: str
) -> None:
    rpc = harnesses(redis=RedisConf(host=redis_proxy.address, key=redis_key))
    assert rpc.call("EnableAvatarSchedule", avatar_id=33).code == 0
    redis_proxy.blackhole()
    reply = rpc.call("PauseAvatarSchedule", avatar_id=33)  # MySQL first, then Redis
    assert_unavailable(reply, "redis")
    assert f"Redis 127.0.0.1:{redis_proxy.port}" in reply.message
    redis_proxy.heal()
    enabled = wait_until(
        lambda: rpc.call("EnableAvatarSchedule", avatar_id=33).code == 0,
        RECOVERY_S,
        "the API to write Redis again",
    )
    assert enabled
    rpc.assert_index_matches_mysql()


def test_a_trigger_whose_record_meets_a_silent_mysql_answers_503_in_time_and_records_later(
    harnesses: Callable[..., Harness],
    mysql_proxy: BlackholeProxy,
    database: str,
    action_simulator: RunningSimulator,
) -> None:
    rpc = harnesses(mysql=mysql_through(mysql_proxy, database))
    before = put_in_state(rpc, 34, "active")
    control = SimulatorControl(action_simulator.address)
    control.configure(latency_ms=700)
    pending = rpc.stub.TriggerSchedule.future(pb.TriggerScheduleRequest(avatar_id=34), timeout=10)
    wait_until(lambda: control.stats().calls_per_avatar.get(34) == 1, WAIT_S, "the Action call")
    mysql_proxy.blackhole()  # Action answers into a MySQL that no longer does
    reply = pending.result(timeout=WAIT_S)  # a code, not the server's DEADLINE_EXCEEDED
    assert (reply.code, reply.message) == (503, RECORDING_DELAYED)
    mysql_proxy.heal()
    wait_until(lambda: rpc.history_count(34) == 1, RECOVERY_S, "the delayed record")
    [entry] = rpc.store.history(34, 10)
    assert (entry.trigger, entry.outcome) == ("manual", "success")
    assert rpc.store.get(34).schedule_count == before.schedule_count + 1
    wait_until(lambda: not rpc.index.is_inflight(34), WAIT_S, "the lease to be settled")
    rpc.assert_index_matches_mysql()


def test_a_trigger_whose_policy_read_meets_a_silent_mysql_answers_503_before_calling_action(
    harnesses: Callable[..., Harness],
    mysql_proxy: BlackholeProxy,
    database: str,
    action_simulator: RunningSimulator,
) -> None:
    class GoingSilent(MysqlStore):
        """MySQL goes silent right before the trigger reads the avatar's policy."""

        armed = False

        def get_policies(self, avatar_ids: Sequence[int]) -> dict[int, SchedulePolicy]:
            if GoingSilent.armed:
                mysql_proxy.blackhole()
            return super().get_policies(avatar_ids)

    # A read timeout of an hour: only the call's own deadline can end the wait in time.
    mysql = mysql_through(mysql_proxy, database, "&readTimeout=3600s")
    rpc = harnesses(store=GoingSilent, mysql=mysql)
    put_in_state(rpc, 35, "active")
    GoingSilent.armed = True
    reply = rpc.call("TriggerSchedule", avatar_id=35)  # a code, not DEADLINE_EXCEEDED
    assert_unavailable(reply, "MySQL")
    assert SimulatorControl(action_simulator.address).stats().calls_per_avatar.get(35) is None


@pytest.mark.parametrize(
    ("caller_left_s", "server_ms", "expected"),
    [
        (None, 2000, 1.8),  # the server's Timeout, less a tenth
        (0.5, 2000, 0.45),  # the caller's deadline is sooner: less the 50 ms floor
        (30.0, 0, 29.5),  # no server Timeout: the caller's, less the 500 ms cap
        (None, 0, None),  # no deadline at all: the socket timeouts alone
        (0.01, 2000, 0.0),  # spent: nothing left for I/O
    ],
)
def test_io_budget_leaves_time_to_answer(
    caller_left_s: float | None, server_ms: int, expected: float | None
) -> None:
    assert io_budget_s(caller_left_s, server_ms) == pytest.approx(expected)


class _NoCallerDeadline:
    """The part of a ``grpc.ServicerContext`` the TimeoutInterceptor reads."""

    def time_remaining(self) -> None:
        return None


class _Details(grpc.HandlerCallDetails):
    method = "/scheduler.Scheduler/PauseAvatarSchedule"


def test_a_handler_that_queued_for_the_pool_gets_only_what_is_left_of_the_timeout() -> None:
    """The server's Timeout counts from the call's arrival: a handler that waited
    behind a hung one must bound its I/O by what is left, or it overruns and
    answers DEADLINE_EXCEEDED where a 503 was due (and makes the next one wait)."""
    interceptor = TimeoutInterceptor(timeout_ms=2000, max_workers=1)
    holding, release = threading.Event(), threading.Event()
    seen: list[float | None] = []

    def hold(request: Any, context: Any) -> str:
        holding.set()
        release.wait()
        return "held"

    def measure(request: Any, context: Any) -> str:
        seen.append(deadline.remaining())
        return "measured"

    def bounded(behavior: Callable[[Any, Any], str]) -> Callable[[], str]:
        handler = interceptor.wrap(_Details(), grpc.unary_unary_rpc_method_handler(behavior))
        return lambda: handler.unary_unary(None, _NoCallerDeadline())

    try:
        first = threading.Thread(target=bounded(hold))
        first.start()
        wait_until(holding.is_set, 5, "the first handler to hold the only pool thread")
        queued_at = time.monotonic()
        second = threading.Thread(target=bounded(measure))
        second.start()
        wait_until(lambda: time.monotonic() - queued_at >= 0.5, 5, "half a second in the queue")
        release.set()
        first.join(5)
        second.join(5)
    finally:
        release.set()
        interceptor.close()
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0] < 2.0 - 0.5
