"""Stateful fuzzing of the Scheduler API against a model built on ``policy.decide``.

A hypothesis state machine calls all eight RPCs in random order on a live
in-process server (real MariaDB, Redis and an Action simulator), with ids at
the int64 bounds, 0, negatives, unknown avatars, duplicate and oversize
batches, and history limits and cursors in and out of range. The model
decides every expected answer code from ``policy.decide`` and tracks each
avatar's status, pause reason, counters and history length; after every step
MySQL and the Redis index must agree with it (DESIGN §2.3, invariant 1). The
only 500 allowed is the contract's: Trigger when Action answers a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from me2_devkit.simulators import RunningSimulator, SimulatorControl
from me2_scheduler import policy
from me2_scheduler.clock import epoch
from me2_scheduler.policy import Call
from me2_scheduler.states import PauseReason, Status

from .fixtures_rpc import Harness

pytestmark = pytest.mark.timeout(240)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FAILING = 3  # Action always fails for this avatar
KNOWN = (1, 2, FAILING, INT64_MAX)
MAX_FAILURES = 5

AVATAR_IDS = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN),
    st.sampled_from([0, -1, INT64_MIN, INT64_MAX, 4]),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
)
BATCHES = st.one_of(
    st.lists(AVATAR_IDS, max_size=6),
    st.tuples(st.integers(998, 1002), st.sampled_from(KNOWN)).map(lambda t: [t[1]] * t[0]),
    st.tuples(st.integers(995, 1000), st.lists(st.sampled_from(KNOWN), min_size=1)).map(
        lambda t: (t[1] * t[0])[: t[0]]
    ),
)
LIMITS = st.one_of(
    st.sampled_from([0, 1, 2, 20, 100, 101, -1, INT32_MAX, INT32_MIN]), st.integers(-3, 103)
)
CURSORS = st.one_of(
    st.just(0), st.sampled_from([-1, 1, INT64_MAX, INT64_MIN]), st.integers(INT64_MIN, INT64_MAX)
)
STATE_CALLS = {
    "EnableAvatarSchedule": Call.ENABLE,
    "PauseAvatarSchedule": Call.PAUSE,
    "ResumeAvatarSchedule": Call.RESUME,
    "DisableAvatarSchedule": Call.DISABLE,
    "GetAvatarScheduleStatus": Call.GET,
}


@dataclass
class Model:
    """What one avatar's row must hold."""

    status: str = Status.ACTIVE
    pause_reason: str | None = None
    failed_count: int = 0
    schedule_count: int = 0
    history: int = 0


def reset(rpc: Harness) -> None:
    """Empty both tables and the index: every example starts from nothing."""
    rpc.sql("DELETE FROM avatar_schedule_history")
    rpc.sql("DELETE FROM avatar_schedules")
    keys = rpc.index.keys
    rpc.index.client.delete(keys.due, keys.inflight, keys.leases, keys.ready, keys.meta)


@pytest.fixture
def live(rpc: Harness, action_simulator: RunningSimulator) -> Harness:
    """The in-process server, its Action failing every call for ``FAILING``."""
    SimulatorControl(action_simulator.address).configure(fail_avatars=[FAILING])
    return rpc


class SchedulerMachine(RuleBasedStateMachine):
    """Random sequences of all eight RPCs, each answer checked against the model."""

    live: Harness  # set by the test before the first example

    def __init__(self) -> None:
        super().__init__()
        reset(self.live)
        self.model: dict[int, Model] = {}

    # -- the rules ------------------------------------------------------------

    @initialize(avatar_ids=st.sets(st.sampled_from(KNOWN)))
    def enable_some(self, avatar_ids: set[int]) -> None:
        """Start with some avatars enabled, so sequences reach deep states sooner."""
        for avatar_id in sorted(avatar_ids):
            self.state_call("EnableAvatarSchedule", avatar_id)

    @rule(method=st.sampled_from(sorted(STATE_CALLS)), avatar_id=AVATAR_IDS)
    def state_call(self, method: str, avatar_id: int) -> None:
        reply = self.live.call(method, avatar_id=avatar_id)
        expected = self.expect(STATE_CALLS[method], avatar_id)
        assert reply.code == expected.code, (method, avatar_id, reply)
        if reply.code == policy.OK:
            self.apply(STATE_CALLS[method], avatar_id, expected)
            if "info" in reply.DESCRIPTOR.fields_by_name:  # every answer but Pause's
                self.assert_info(reply.info)

    @rule(avatar_id=st.sampled_from(KNOWN), times=st.integers(2, MAX_FAILURES + 1))
    def triggers_in_a_row(self, avatar_id: int, times: int) -> None:
        """Enough triggers of one avatar to reach the auto-pause when Action fails it."""
        for _ in range(times):
            self.trigger(avatar_id)

    @rule(avatar_id=AVATAR_IDS)
    def trigger(self, avatar_id: int) -> None:
        reply = self.live.call("TriggerSchedule", avatar_id=avatar_id)
        expected = self.expect(Call.TRIGGER, avatar_id)
        if expected.code != policy.OK:
            assert reply.code == expected.code, (avatar_id, reply)
            return
        row = self.model[avatar_id]
        row.history += 1
        if avatar_id == FAILING:
            assert reply.code == policy.INTERNAL and reply.message.startswith("action failed")
            outcome = policy.after_failure(row.failed_count, MAX_FAILURES)
            row.failed_count = outcome.failed_count
            if outcome.pause and row.status == Status.ACTIVE:
                row.status, row.pause_reason = Status.PAUSED, PauseReason.FAILURES
        else:
            assert reply.code == policy.OK and reply.action_id > 0, reply
            row.failed_count, row.schedule_count = 0, row.schedule_count + 1

    @rule(avatar_ids=BATCHES)
    def batch_get(self, avatar_ids: list[int]) -> None:
        reply = self.live.call("BatchGetScheduleStatus", avatar_ids=avatar_ids)
        if len(avatar_ids) > 1000 or any(a <= 0 for a in avatar_ids):
            assert reply.code == policy.INVALID, reply.message
            return
        assert reply.code == policy.OK, reply.message
        wanted = [a for a in dict.fromkeys(avatar_ids) if a in self.model]
        assert [info.avatar_id for info in reply.schedules] == wanted
        for info in reply.schedules:
            self.assert_info(info)

    @rule(avatar_id=AVATAR_IDS, limit=LIMITS, cursor=CURSORS)
    def history(self, avatar_id: int, limit: int, cursor: int) -> None:
        reply = self.live.call(
            "GetAvatarScheduleHistory", avatar_id=avatar_id, limit=limit, cursor=cursor
        )
        if avatar_id <= 0 or not 0 <= limit <= 100 or cursor < 0:
            assert reply.code == policy.INVALID, (avatar_id, limit, cursor, reply)
            return
        if avatar_id not in self.model:
            assert reply.code == policy.NOT_FOUND, reply
            return
        assert reply.code == policy.OK, reply
        page = limit or 20
        ids = [entry.id for entry in reply.entries]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
        assert all(entry.avatar_id == avatar_id for entry in reply.entries)
        assert len(ids) <= page and (cursor == 0 or all(i < cursor for i in ids))
        if cursor == 0:
            assert len(ids) == min(page, self.model[avatar_id].history)
        assert reply.next_cursor == (ids[-1] if len(ids) == page else 0)

    # -- the model ------------------------------------------------------------

    def expect(self, call: Call, avatar_id: int) -> policy.Decision:
        if avatar_id <= 0:
            return policy.Decision(policy.INVALID)
        row = self.model.get(avatar_id)
        return policy.decide(call, row.status if row else None)

    def apply(self, call: Call, avatar_id: int, decision: policy.Decision) -> None:
        row = self.model.setdefault(avatar_id, Model())
        if decision.new_status is not None:
            row.status = decision.new_status
            row.pause_reason = decision.pause_reason if row.status == Status.PAUSED else None
        if decision.reschedule:
            row.failed_count = 0

    def assert_info(self, info: Any) -> None:
        row = self.model[info.avatar_id]
        seen = (info.status, info.failed_count, info.schedule_count)
        assert seen == (row.status, row.failed_count, row.schedule_count), (info, row)

    # -- after every step -----------------------------------------------------

    @invariant()
    def mysql_matches_the_model(self) -> None:
        rows = self.live.sql(
            "SELECT avatar_id, status, pause_reason, failed_count, schedule_count,"
            " (SELECT COUNT(*) FROM avatar_schedule_history h WHERE h.avatar_id = s.avatar_id)"
            " FROM avatar_schedules s"
        )
        stored = {a: (s, r, f, c, h) for a, s, r, f, c, h in rows}
        modelled = {
            a: (m.status, m.pause_reason, m.failed_count, m.schedule_count, m.history)
            for a, m in self.model.items()
        }
        assert stored == modelled

    @invariant()
    def the_index_holds_exactly_the_active_avatars(self) -> None:
        index = self.live.index
        due = {int(m): s for m, s in index.client.zrange(index.keys.due, 0, -1, withscores=True)}
        inflight = {int(m) for m in index.client.zrange(index.keys.inflight, 0, -1)}
        active = {a for a, m in self.model.items() if m.status == Status.ACTIVE}
        assert not inflight, "no dispatch is in progress between steps"
        assert set(due) == active
        nexts = dict(self.live.sql("SELECT avatar_id, next_schedule_time FROM avatar_schedules"))
        for avatar_id, score in due.items():
            assert score == epoch(nexts[avatar_id].replace(tzinfo=timezone.utc)), avatar_id


def test_random_sequences_of_every_rpc_agree_with_the_policy_model(live: Harness) -> None:
    SchedulerMachine.live = live
    run_state_machine_as_test(
        SchedulerMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
