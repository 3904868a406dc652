"""The scheduling-policy RPCs on real MariaDB, Redis and an Action simulator.

Validation answers 400 naming every bad field; a policy set reads back
equal; a next time outside the new windows is re-drawn inside them, in MySQL
and in Redis alike; the bulk call sets a thousand avatars in one call; the
summary shows in ScheduleInfo; enable, resume and a triggered dispatch draw
in the policy's active time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.json_format import ParseDict

from me2_scheduler.clock import epoch, utc_now
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.schedule_policy import in_window, parse_policy, summary

from .fixtures_rpc import Harness

SHANGHAI = ZoneInfo("Asia/Shanghai")


def message(**document: Any) -> pb.SchedulePolicy:
    return ParseDict(document, pb.SchedulePolicy())


def enabled(rpc: Harness, *avatar_ids: int) -> None:
    for avatar_id in avatar_ids:
        assert rpc.call("EnableAvatarSchedule", avatar_id=avatar_id).code == 0


def hour_window_after(moment: datetime, zone: ZoneInfo, hours: int = 1) -> dict[str, str]:
    """A one-hour window starting ``hours`` after the hour of ``moment`` in ``zone``:
    it never holds ``moment`` itself."""
    start = (moment.astimezone(zone).hour + hours) % 24
    return {"start": f"{start:02d}:00", "end": f"{(start + 1) % 24:02d}:00"}


def next_time(rpc: Harness, avatar_id: int) -> datetime:
    row = rpc.store.get(avatar_id)
    assert row is not None
    return row.next_schedule_time


# -- validation -----------------------------------------------------------------------


def test_a_bad_policy_is_refused_with_one_sentence_per_bad_field(rpc: Harness) -> None:
    enabled(rpc, 1)
    bad = message(
        time_zone="Mars/Olympus",
        windows=[{"start": "25:00", "end": "08:00", "days": ["funday"]}],
        min_interval_hours=7,
        max_interval_hours=3,
    )
    reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=bad)

    assert reply.code == 400
    sentences = reply.message.split("; ")
    fields = [sentence.split(":", 1)[0] for sentence in sentences]
    assert {"time_zone", "windows[0].start", "windows[0].days[0]"} <= set(fields)
    assert len(fields) == len(set(fields)), reply.message  # one sentence per field
    assert "\n" not in reply.message
    assert rpc.call("GetAvatarSchedulePolicy", avatar_id=1).is_default


def test_a_one_sided_bound_is_checked_against_the_service_interval(rpc: Harness) -> None:
    enabled(rpc, 1)
    reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=message(min_interval_hours=8))
    assert reply.code == 400
    assert reply.message.startswith("min_interval_hours: ")


def test_a_policy_that_never_opens_is_a_400_not_a_hang(rpc: Harness) -> None:
    enabled(rpc, 1)
    never = message(
        windows=[{"start": "08:00", "end": "09:00", "days": ["sat"]}], day_rates={"sat": 0}
    )
    reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=never)
    assert reply.code == 400 and reply.message


@pytest.mark.parametrize(
    ("fields", "code", "wanted"),
    [
        ({"avatar_id": 1}, 400, "policy: is required"),
        ({"avatar_id": 0, "policy": pb.SchedulePolicy()}, 400, "avatar_id must be a positive"),
        ({"avatar_id": 404, "policy": pb.SchedulePolicy()}, 404, "no schedule for this avatar"),
    ],
)
def test_set_answers_400_or_404_for_what_it_cannot_take(
    rpc: Harness, fields: dict, code: int, wanted: str
) -> None:
    enabled(rpc, 1)
    reply = rpc.call("SetAvatarSchedulePolicy", **fields)
    assert (reply.code, reply.message.startswith(wanted)) == (code, True), reply.message


def test_get_answers_404_without_a_schedule_and_400_for_a_bad_id(rpc: Harness) -> None:
    assert rpc.call("GetAvatarSchedulePolicy", avatar_id=9).code == 404
    assert rpc.call("GetAvatarSchedulePolicy", avatar_id=-1).code == 400


@pytest.mark.parametrize(
    ("avatar_ids", "wanted"),
    [
        ([], "give at least one avatar_id"),
        (list(range(1, 1002)), "at most 1000 avatar_ids per call"),
        ([1, 0], "every avatar_id must be a positive integer"),
    ],
)
def test_the_bulk_call_refuses_a_bad_id_list(rpc: Harness, avatar_ids: list, wanted: str) -> None:
    reply = rpc.call("SetSchedulePolicies", avatar_ids=avatar_ids, policy=pb.SchedulePolicy())
    assert (reply.code, reply.message) == (400, wanted)


# -- set and get ----------------------------------------------------------------------


def test_an_avatar_without_a_policy_gets_the_default_with_the_service_values(
    rpc: Harness,
) -> None:
    enabled(rpc, 1)
    reply = rpc.call("GetAvatarSchedulePolicy", avatar_id=1)
    assert (reply.code, reply.is_default, reply.summary) == (0, True, "always active")
    assert reply.policy == pb.SchedulePolicy()
    assert reply.effective_time_zone == "UTC"  # the harness's Timezone
    assert (reply.effective_min_interval_hours, reply.effective_max_interval_hours) == (2, 6)


def test_a_policy_set_is_read_back_in_its_normal_form(rpc: Harness) -> None:
    enabled(rpc, 1)
    sent = message(
        time_zone="Asia/Shanghai",
        windows=[
            {"start": "08:00:00", "end": "23:00", "days": ["MON", "tue", "wed", "thu", "fri"]}
        ],
        min_interval_hours=1.5,
        max_interval_hours=3,
        day_rates={"sat": 2, "sun": 2, "mon": 1},
        quiet_dates=["2026-12-25", "2026-01-01", "2026-12-25"],
    )
    set_reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=sent)
    got = rpc.call("GetAvatarSchedulePolicy", avatar_id=1)

    assert set_reply.code == 0 and got.code == 0
    assert (
        got.policy
        == set_reply.policy
        == message(
            time_zone="Asia/Shanghai",
            windows=[
                {"start": "08:00", "end": "23:00", "days": ["mon", "tue", "wed", "thu", "fri"]}
            ],
            min_interval_hours=1.5,
            max_interval_hours=3,
            day_rates={"sat": 2, "sun": 2},
            quiet_dates=["2026-01-01", "2026-12-25"],
        )
    )
    assert not got.is_default
    assert got.effective_time_zone == "Asia/Shanghai"
    assert (got.effective_min_interval_hours, got.effective_max_interval_hours) == (1.5, 3)
    assert got.summary == set_reply.info.policy
    assert got.summary.startswith("Asia/Shanghai 08:00-23:00 Mon-Fri")


def test_an_empty_policy_goes_back_to_the_default(rpc: Harness) -> None:
    enabled(rpc, 1)
    rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=message(max_interval_hours=5))
    reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=pb.SchedulePolicy())
    assert reply.code == 0
    assert rpc.call("GetAvatarSchedulePolicy", avatar_id=1).is_default
    assert rpc.sql("SELECT COUNT(*) FROM avatar_schedule_policies") == [(0,)]


def test_each_policy_call_is_logged_as_every_call(
    rpc: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    enabled(rpc, 1, 2)
    caplog.set_level(logging.INFO, logger="me2_scheduler.rpc")
    rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=pb.SchedulePolicy())
    rpc.call("GetAvatarSchedulePolicy", avatar_id=1)
    rpc.call("SetSchedulePolicies", avatar_ids=[1, 2, 3], policy=pb.SchedulePolicy())

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rpc ")]
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        "rpc SetAvatarSchedulePolicy avatar_id=1 code=0",
        "rpc GetAvatarSchedulePolicy avatar_id=1 code=0",
        "rpc SetSchedulePolicies avatar_ids=3 code=0",
    ]


# -- the re-draw ------------------------------------------------------------------------


def test_a_next_time_outside_the_new_windows_is_redrawn_inside_them_in_mysql_and_redis(
    rpc: Harness,
) -> None:
    enabled(rpc, 1)
    before, asked = next_time(rpc, 1), utc_now()
    document = {"time_zone": "Asia/Shanghai", "windows": [hour_window_after(before, SHANGHAI)]}

    reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=message(**document))

    assert reply.code == 0 and reply.redrawn
    after = next_time(rpc, 1)
    assert after != before and after > asked
    assert in_window(after, parse_policy(document), SHANGHAI)
    assert reply.info.next_schedule_time == after.strftime("%Y-%m-%d %H:%M:%S")
    assert rpc.index.due_score(1) == epoch(after)
    rpc.assert_index_matches_mysql()


def test_a_next_time_inside_the_new_windows_is_kept(rpc: Harness) -> None:
    enabled(rpc, 1)
    before = next_time(rpc, 1)
    around = {
        "start": before.strftime("%H:00"),
        "end": (before + timedelta(hours=1)).strftime("%H:00"),
    }

    reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=message(windows=[around]))

    assert reply.code == 0 and not reply.redrawn
    assert next_time(rpc, 1) == before
    rpc.assert_index_matches_mysql()


def test_a_paused_schedule_keeps_its_time_and_a_resume_draws_in_the_policy(rpc: Harness) -> None:
    enabled(rpc, 1)
    assert rpc.call("PauseAvatarSchedule", avatar_id=1).code == 0
    before = next_time(rpc, 1)
    document = {"time_zone": "Asia/Shanghai", "windows": [hour_window_after(before, SHANGHAI)]}

    reply = rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=message(**document))
    assert reply.code == 0 and not reply.redrawn and next_time(rpc, 1) == before

    assert rpc.call("ResumeAvatarSchedule", avatar_id=1).code == 0
    assert in_window(next_time(rpc, 1), parse_policy(document), SHANGHAI)
    rpc.assert_index_matches_mysql()


def test_a_triggered_dispatch_draws_its_next_time_in_the_policy(rpc: Harness) -> None:
    enabled(rpc, 1)
    document = {"windows": [hour_window_after(utc_now(), ZoneInfo("UTC"), hours=5)]}
    assert rpc.call("SetAvatarSchedulePolicy", avatar_id=1, policy=message(**document)).code == 0

    assert rpc.call("TriggerSchedule", avatar_id=1).code == 0

    assert in_window(next_time(rpc, 1), parse_policy(document), ZoneInfo("UTC"))
    rpc.assert_index_matches_mysql()


# -- in bulk ------------------------------------------------------------------------------


def test_one_bulk_call_sets_a_thousand_avatars_and_redraws_those_outside(rpc: Harness) -> None:
    avatar_ids = list(range(1, 1000))
    now = utc_now().replace(microsecond=0)
    for avatar_id in avatar_ids:  # straight into MySQL and Redis: the API would take long
        due = now + timedelta(hours=1, seconds=86 * avatar_id)  # spread over a day
        rpc.store.create(avatar_id, due)
        rpc.index.put_due(avatar_id, epoch(due))
    rpc.call("PauseAvatarSchedule", avatar_id=999)
    mornings = {"windows": [{"start": "00:00", "end": "12:00"}]}
    before = {avatar_id: next_time(rpc, avatar_id) for avatar_id in avatar_ids}
    outside = {a for a, due in before.items() if due.hour >= 12 and a != 999}

    reply = rpc.call(
        "SetSchedulePolicies", avatar_ids=[*avatar_ids, 5000, 1], policy=message(**mornings)
    )

    assert (reply.code, reply.updated, list(reply.missing_avatar_ids)) == (0, 999, [5000])
    assert reply.redrawn == len(outside) > 300
    assert rpc.sql("SELECT COUNT(*) FROM avatar_schedule_policies") == [(999,)]
    rpc.assert_index_matches_mysql()
    chosen, utc = parse_policy(mornings), ZoneInfo("UTC")
    for avatar_id, due in before.items():
        after = next_time(rpc, avatar_id)
        if avatar_id in outside:
            assert in_window(after, chosen, utc), avatar_id
        else:
            assert after == due, avatar_id


# -- ScheduleInfo -------------------------------------------------------------------------


def test_schedule_info_carries_each_avatars_policy_summary(rpc: Harness) -> None:
    enabled(rpc, 1, 2, 3)
    evenings = {"time_zone": "Asia/Shanghai", "windows": [{"start": "18:00", "end": "23:00"}]}
    rpc.call("SetAvatarSchedulePolicy", avatar_id=2, policy=message(**evenings))
    rpc.call("SetAvatarSchedulePolicy", avatar_id=3, policy=message(day_rates={"sat": 2}))

    batch = rpc.call("BatchGetScheduleStatus", avatar_ids=[3, 1, 2])
    single = rpc.call("GetAvatarScheduleStatus", avatar_id=2)

    assert [info.policy for info in batch.schedules] == [
        summary(parse_policy({"day_rates": {"sat": 2}})),
        "always active",
        summary(parse_policy(evenings)),
    ]
    assert single.info.policy == "Asia/Shanghai 18:00-23:00"
    assert rpc.call("EnableAvatarSchedule", avatar_id=2).info.policy == single.info.policy
