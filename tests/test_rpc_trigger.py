"""TriggerSchedule through the wire: a manual dispatch recorded like a worker's.

On real MariaDB, Redis and an Action simulator; after each trigger the Redis
index is checked against MySQL (invariant 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

import grpc
import pytest

from me2_devkit.simulators import RunningSimulator, SimulatorControl
from me2_scheduler.clock import epoch
from me2_scheduler.config import RpcClientConf
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow

from .fixtures_rpc import Harness, assert_new_next, put_in_state
from .support import this_second, wait_until


def test_trigger_records_the_dispatch_like_a_worker(rpc: Harness) -> None:
    put_in_state(rpc, 8, "active")
    reply = rpc.call("TriggerSchedule", avatar_id=8)
    assert reply.code == 0
    row = rpc.store.get(8)
    assert (row.schedule_count, row.last_action_type) == (1, reply.action_type)
    [entry] = rpc.store.history(8, 10)
    recorded = (entry.trigger, entry.outcome, entry.action_type, entry.action_id)
    assert recorded == ("manual", "success", reply.action_type, reply.action_id)
    rpc.assert_index_matches_mysql()


def test_trigger_of_an_avatar_in_flight_is_refused(
    rpc: Harness, action_simulator: RunningSimulator
) -> None:
    before = put_in_state(rpc, 9, "active")
    assert rpc.index.claim_one(9, 30) is not None
    reply = rpc.call("TriggerSchedule", avatar_id=9)
    assert (reply.code, reply.message) == (409, "a dispatch is in progress for this avatar")
    assert rpc.store.get(9) == before
    assert rpc.index.is_inflight(9)
    assert SimulatorControl(action_simulator.address).stats().total == 0


def test_trigger_of_a_paused_avatar_updates_its_stats_and_next_time_and_leaves_it_paused(
    rpc: Harness,
) -> None:
    before = put_in_state(rpc, 10, "paused")
    started = this_second()
    reply = rpc.call("TriggerSchedule", avatar_id=10)
    assert reply.code == 0
    row = rpc.store.get(10)
    assert (row.status, row.pause_reason) == ("paused", "user")
    assert (row.schedule_count, row.failed_count) == (before.schedule_count + 1, 0)
    assert row.last_action_type == reply.action_type != ""
    assert started <= row.last_schedule_time <= this_second()
    assert_new_next(row, started, this_second())
    # Paused: in neither due nor inflight (invariant 1), so the new time plans nothing.
    assert (rpc.index.due_score(10), rpc.index.is_inflight(10)) == (None, False)
    rpc.assert_index_matches_mysql()


def test_a_triggered_auto_paused_avatar_stays_paused_until_a_resume_draws_its_own_time(
    rpc: Harness, action_simulator: RunningSimulator
) -> None:
    put_in_state(rpc, 15, "active")
    control = SimulatorControl(action_simulator.address)
    control.configure(fail_avatars=[15])
    replies = [rpc.call("TriggerSchedule", avatar_id=15).code for _ in range(2)]
    assert replies == [500, 500]  # 3 failures + 2: the fifth in a row pauses
    paused = rpc.store.get(15)
    assert (paused.status, paused.pause_reason, paused.failed_count) == ("paused", "failures", 5)
    control.configure(fail_avatars=[])
    started = this_second()
    assert rpc.call("TriggerSchedule", avatar_id=15).code == 0
    triggered = rpc.store.get(15)
    assert (triggered.status, triggered.pause_reason) == ("paused", "failures")
    assert (triggered.failed_count, triggered.schedule_count) == (0, paused.schedule_count + 1)
    assert_new_next(triggered, started, this_second())
    rpc.assert_index_matches_mysql()
    resumed = rpc.call("ResumeAvatarSchedule", avatar_id=15)
    assert (resumed.code, resumed.info.status) == (0, "active")
    assert rpc.index.due_score(15) == epoch(rpc.store.get(15).next_schedule_time)
    rpc.assert_index_matches_mysql()


def auto_dispatch(rpc: Harness, avatar_id: int, due: datetime | None = None) -> str:
    """Make the avatar due (in Redis, and in MySQL when ``due`` is given), claim it and
    run a worker's dispatch; the outcome's result."""
    if due is not None:
        rpc.sql(
            "UPDATE avatar_schedules SET next_schedule_time = %s WHERE avatar_id = %s",
            due.replace(tzinfo=None),
            avatar_id,
        )
    rpc.index.put_due(avatar_id, epoch(due or datetime(2000, 1, 1, tzinfo=timezone.utc)))
    assert rpc.index.claim_due(batch=10, lease_s=30) == 1
    claims = rpc.index.pop_ready_many(1, timeout_s=1).claims
    assert len(claims) == 1
    dispatcher = Dispatcher(rpc.config, rpc.store, rpc.index, rpc.action)
    (dispatched,) = dispatcher.dispatch_batch(claims)
    return dispatched.result


def test_schedule_count_counts_successful_dispatches_automatic_and_manual_only(
    rpc: Harness, action_simulator: RunningSimulator
) -> None:
    put_in_state(rpc, 16, "active")
    control = SimulatorControl(action_simulator.address)
    assert rpc.call("TriggerSchedule", avatar_id=16).code == 0
    control.configure(fail_avatars=[16])
    assert rpc.call("TriggerSchedule", avatar_id=16).code == 500
    control.configure(fail_avatars=[])
    assert auto_dispatch(rpc, 16) == "skipped"  # MySQL says it is not due yet
    assert rpc.store.get(16).schedule_count == 1
    assert auto_dispatch(rpc, 16, due=datetime(2000, 1, 1, tzinfo=timezone.utc)) == "success"
    outcomes = [(e.trigger, e.outcome) for e in reversed(rpc.store.history(16, 10))]
    assert outcomes == [("manual", "success"), ("manual", "failure"), ("auto", "success")]
    assert rpc.store.get(16).schedule_count == 2
    rpc.assert_index_matches_mysql()


def test_trigger_reports_an_action_failure_as_500_and_counts_it(
    rpc: Harness, action_simulator: RunningSimulator
) -> None:
    before = put_in_state(rpc, 11, "active")
    SimulatorControl(action_simulator.address).configure(fail_avatars=[11])
    reply = rpc.call("TriggerSchedule", avatar_id=11)
    assert reply.code == 500
    assert "simulated failure" in reply.message
    after = rpc.store.get(11)
    counts = (after.failed_count, after.schedule_count)
    assert counts == (before.failed_count + 1, before.schedule_count)
    assert [e.outcome for e in rpc.store.history(11, 10)] == ["failure"]
    rpc.assert_index_matches_mysql()


def test_trigger_reports_an_unanswering_action_as_503_and_counts_it(
    harnesses: Callable[..., Harness], action_simulator: RunningSimulator
) -> None:
    rpc = harnesses(action_rpc=RpcClientConf(endpoints=(action_simulator.address,), timeout_ms=200))
    before = put_in_state(rpc, 13, "active")
    SimulatorControl(action_simulator.address).configure(latency_ms=1000)
    reply = rpc.call("TriggerSchedule", avatar_id=13)
    assert reply.code == 503
    assert "DEADLINE_EXCEEDED" in reply.message
    assert rpc.store.get(13).failed_count == before.failed_count + 1
    rpc.assert_index_matches_mysql()


def test_a_trigger_that_overruns_the_server_timeout_is_deadline_exceeded(
    harnesses: Callable[..., Harness],
    action_simulator: RunningSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rpc = harnesses(timeout_ms=200)
    put_in_state(rpc, 12, "active")
    SimulatorControl(action_simulator.address).configure(latency_ms=1000)
    caplog.set_level(logging.INFO, logger="me2_scheduler.rpc")
    before = rpc.store.get(12)
    with pytest.raises(grpc.RpcError) as raised:
        rpc.call("TriggerSchedule", avatar_id=12)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "rpc TriggerSchedule avatar_id=12 code=DEADLINE_EXCEEDED" in caplog.text
    # The Action call had the server's 200 ms too: it is cut and recorded as a failure.
    wait_until(lambda: rpc.history_count(12) == 1, 10, "the cut dispatch to be recorded")
    [entry] = rpc.store.history(12, 10)
    assert (entry.trigger, entry.outcome) == ("manual", "failure")
    after = rpc.store.get(12)
    counts = (after.schedule_count, after.failed_count)
    assert counts == (before.schedule_count, before.failed_count + 1)
    wait_until(lambda: not rpc.index.is_inflight(12), 10, "the lease to be settled")
    rpc.assert_index_matches_mysql()


class _DisablingStore(MysqlStore):
    """The second read of a schedule finds it disabled by another caller meanwhile."""

    reads = 0

    def get(self, avatar_id: int) -> ScheduleRow | None:
        self.reads += 1
        if self.reads == 2:
            with self._cursor("racing", write=True) as cur:
                cur.execute(
                    "UPDATE avatar_schedules SET status = 'disabled', version = version + 1"
                    " WHERE avatar_id = %s",
                    (avatar_id,),
                )
        return super().get(avatar_id)


def test_a_trigger_whose_avatar_is_disabled_meanwhile_releases_its_claim(
    harnesses: Callable[..., Harness], action_simulator: RunningSimulator
) -> None:
    put_in_state(harnesses(), 23, "active")
    rpc = harnesses(store=_DisablingStore)
    reply = rpc.call("TriggerSchedule", avatar_id=23)
    assert reply.code == 409
    assert (rpc.index.due_score(23), rpc.index.is_inflight(23)) == (None, False)
    assert SimulatorControl(action_simulator.address).stats().total == 0


def test_resume_during_a_manual_dispatch_keeps_the_avatar_in_the_index(rpc: Harness) -> None:
    put_in_state(rpc, 14, "paused")
    claim = rpc.index.claim_one(14, 60)  # a TriggerSchedule of the paused avatar in flight
    assert claim is not None
    reply = rpc.call("ResumeAvatarSchedule", avatar_id=14)
    assert reply.code == 0 and reply.info.status == "active"
    # The trigger settles from the row it read (paused): drop. Its lease is gone, so no-op.
    assert rpc.index.ack(claim, None) is False
    assert rpc.index.due_score(14) is not None
    rpc.assert_index_matches_mysql()
