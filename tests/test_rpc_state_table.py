"""Every call in every state follows the state table, and arguments are checked.

The table (DESIGN §4) is written out here independently of ``policy.py``; after
every call the Redis index is checked against MySQL (invariant 1).
"""

from __future__ import annotations

from datetime import datetime

import pytest

from me2_scheduler.storage.mysql import ScheduleRow
from me2_scheduler.timefmt import Display

from .fixtures_rpc import Harness, assert_new_next, put_in_state
from .support import this_second

# (call, state) -> (code, what happens to the row)
TABLE = {
    ("EnableAvatarSchedule", "none"): (0, "created"),
    ("EnableAvatarSchedule", "active"): (0, "unchanged"),
    ("EnableAvatarSchedule", "paused"): (0, "reactivated"),
    ("EnableAvatarSchedule", "disabled"): (0, "reactivated"),
    ("PauseAvatarSchedule", "none"): (404, "absent"),
    ("PauseAvatarSchedule", "active"): (0, "paused"),
    ("PauseAvatarSchedule", "paused"): (0, "unchanged"),
    ("PauseAvatarSchedule", "disabled"): (409, "unchanged"),
    ("ResumeAvatarSchedule", "none"): (404, "absent"),
    ("ResumeAvatarSchedule", "active"): (0, "unchanged"),
    ("ResumeAvatarSchedule", "paused"): (0, "reactivated"),
    ("ResumeAvatarSchedule", "disabled"): (409, "unchanged"),
    ("DisableAvatarSchedule", "none"): (404, "absent"),
    ("DisableAvatarSchedule", "active"): (0, "disabled"),
    ("DisableAvatarSchedule", "paused"): (0, "disabled"),
    ("DisableAvatarSchedule", "disabled"): (0, "unchanged"),
    ("TriggerSchedule", "none"): (404, "absent"),
    ("TriggerSchedule", "active"): (0, "dispatched"),
    ("TriggerSchedule", "paused"): (0, "dispatched"),
    ("TriggerSchedule", "disabled"): (409, "unchanged"),
    ("GetAvatarScheduleStatus", "none"): (404, "absent"),
    ("GetAvatarScheduleStatus", "active"): (0, "unchanged"),
    ("GetAvatarScheduleStatus", "paused"): (0, "unchanged"),
    ("GetAvatarScheduleStatus", "disabled"): (0, "unchanged"),
}


def assert_outcome(
    kind: str,
    state: str,
    before: ScheduleRow | None,
    after: ScheduleRow | None,
    times: tuple[datetime, datetime],
) -> None:
    if kind == "absent":
        assert after is None
    elif kind == "unchanged":
        assert after == before
    elif kind == "created":
        assert (after.status, after.failed_count, after.schedule_count) == ("active", 0, 0)
        assert_new_next(after, *times)
    elif kind == "reactivated":
        assert (after.status, after.failed_count, after.pause_reason) == ("active", 0, None)
        assert_new_next(after, *times)
    elif kind == "paused":
        assert (after.status, after.pause_reason) == ("paused", "user")
        assert after.next_schedule_time == before.next_schedule_time
    elif kind == "disabled":
        assert after.status == "disabled"
    elif kind == "dispatched":  # a paused avatar too gets a new next time, and stays paused
        assert (after.status, after.pause_reason) == (state, before.pause_reason)
        assert (after.schedule_count, after.failed_count) == (before.schedule_count + 1, 0)
        assert_new_next(after, *times)


@pytest.mark.parametrize(("call", "state"), list(TABLE))
def test_every_call_in_every_state_follows_the_table_and_keeps_redis_in_step(
    rpc: Harness, call: str, state: str
) -> None:
    code, kind = TABLE[(call, state)]
    before = put_in_state(rpc, 42, state)
    started = this_second()
    reply = rpc.call(call, avatar_id=42)
    times = (started, this_second())
    after = rpc.store.get(42)
    assert (reply.code, reply.message != "") == (code, True)
    assert_outcome(kind, state, before, after, times)
    rpc.assert_index_matches_mysql()
    if code == 0 and "info" in reply.DESCRIPTOR.fields_by_name:
        assert reply.info.avatar_id == 42
        assert reply.info.status == after.status
        assert reply.info.next_schedule_time == Display("UTC").format(after.next_schedule_time)
    if kind == "dispatched":
        assert reply.action_type == after.last_action_type != ""
        assert reply.action_id > 0


def test_resuming_a_disabled_avatar_points_to_enable(rpc: Harness) -> None:
    put_in_state(rpc, 5, "disabled")
    reply = rpc.call("ResumeAvatarSchedule", avatar_id=5)
    assert reply.code == 409
    assert "EnableAvatarSchedule" in reply.message


def test_an_unknown_avatar_is_not_found(rpc: Harness) -> None:
    reply = rpc.call("GetAvatarScheduleStatus", avatar_id=123456)
    assert (reply.code, reply.info.avatar_id) == (404, 0)


# -- argument checks ----------------------------------------------------------

SINGLE_ID_CALLS = (
    "EnableAvatarSchedule",
    "PauseAvatarSchedule",
    "ResumeAvatarSchedule",
    "DisableAvatarSchedule",
    "TriggerSchedule",
    "GetAvatarScheduleStatus",
    "GetAvatarScheduleHistory",
)


@pytest.mark.parametrize("avatar_id", [0, -1])
def test_a_non_positive_avatar_id_is_invalid_on_every_call(rpc: Harness, avatar_id: int) -> None:
    invalid = "avatar_id must be a positive integer"
    for call in SINGLE_ID_CALLS:
        reply = rpc.call(call, avatar_id=avatar_id)
        assert (call, reply.code, reply.message) == (call, 400, invalid)
    reply = rpc.call("BatchGetScheduleStatus", avatar_ids=[7, avatar_id])
    assert reply.code == 400
    assert rpc.sql("SELECT COUNT(*) FROM avatar_schedules") == [(0,)]


def test_a_batch_of_1001_ids_is_refused_and_1000_is_served(rpc: Harness) -> None:
    for avatar_id in (1, 500, 1000):
        put_in_state(rpc, avatar_id, "active")
    too_many = rpc.call("BatchGetScheduleStatus", avatar_ids=list(range(1, 1002)))
    assert (too_many.code, too_many.message) == (400, "at most 1000 avatar_ids per call")
    assert len(too_many.schedules) == 0
    served = rpc.call("BatchGetScheduleStatus", avatar_ids=list(range(1, 1001)))
    assert served.code == 0
    assert [info.avatar_id for info in served.schedules] == [1, 500, 1000]


def test_a_batch_folds_duplicates_keeps_request_order_and_omits_unknown_ids(rpc: Harness) -> None:
    for avatar_id, state in ((3, "active"), (1, "paused"), (2, "disabled")):
        put_in_state(rpc, avatar_id, state)
    reply = rpc.call("BatchGetScheduleStatus", avatar_ids=[2, 99, 1, 2, 3, 1])
    assert reply.code == 0
    assert [(i.avatar_id, i.status) for i in reply.schedules] == [
        (2, "disabled"),
        (1, "paused"),
        (3, "active"),
    ]


def test_an_empty_batch_is_an_empty_success(rpc: Harness) -> None:
    reply = rpc.call("BatchGetScheduleStatus", avatar_ids=[])
    assert (reply.code, len(reply.schedules)) == (0, 0)
