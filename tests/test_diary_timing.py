"""The diary role's decisions without servers: which fire time is due, checkpoints, endings."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from me2_scheduler import cron
from me2_scheduler.config import DiaryScheduleConf
from me2_scheduler.errors import StoreError
from me2_scheduler.states import DiaryRunResult, DiaryRunStatus
from me2_scheduler.storage.diary_runs import Checkpoint, DiaryRun, RunClaim
from me2_scheduler.workers.diary_progress import CHECKPOINT_EVERY, Progress, RunState
from me2_scheduler.workers.diary_timing import Due, FireTimes, Intervals

UTC = timezone.utc
FRESH = Checkpoint()  # a run that has not started an avatar yet


def at(hour: int, minute: int = 0, second: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 2, day, hour, minute, second, tzinfo=UTC)


def fire_times(expr: str, grace_s: float = 0.0, stale_s: float = 120.0) -> FireTimes:
    conf = DiaryScheduleConf(misfire_grace_seconds=grace_s, stale_run_seconds=stale_s)
    return FireTimes(cron.parse(expr, "UTC"), Intervals.of(conf))


# --- intervals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grace_s", "stale_s", "tolerance_s", "heartbeat_s", "recheck_s"),
    [
        (3600.0, 120.0, 3600.0, 30.0, 30.0),  # the defaults: recheck capped at 30 s
        (0.0, 120.0, 60.0, 30.0, 30.0),  # no grace: a fire time still runs up to 60 s late
        (0.0, 20.0, 60.0, 5.0, 10.0),  # heartbeat a quarter, recheck half the stale time
        (0.0, 0.1, 60.0, 0.05, 0.1),  # floors keep the loops from spinning
    ],
)
def test_intervals_derive_from_the_grace_and_the_stale_time(
    grace_s: float, stale_s: float, tolerance_s: float, heartbeat_s: float, recheck_s: float
) -> None:
    conf = DiaryScheduleConf(misfire_grace_seconds=grace_s, stale_run_seconds=stale_s)
    intervals = Intervals.of(conf)
    assert intervals.grace == timedelta(seconds=grace_s)
    assert intervals.tolerance == timedelta(seconds=tolerance_s)
    assert intervals.stale == timedelta(seconds=stale_s)
    assert (intervals.heartbeat_s, intervals.recheck_s) == (heartbeat_s, recheck_s)


# --- fire times ------------------------------------------------------------------------------


def test_a_fire_time_is_due_from_its_moment_until_dealt_with() -> None:
    fires = fire_times("30 10 * * *")
    assert fires.due(at(10, 29, 50)) == Due(None)
    assert fires.due(at(10, 30, 1)) == Due(at(10, 30))
    assert fires.due(at(10, 30, 20)) == Due(at(10, 30))  # the claim failed: tried again
    fires.dealt_with(at(10, 30))
    assert fires.due(at(10, 30, 30)) == Due(None)


def test_the_first_look_catches_up_a_fire_time_within_the_grace() -> None:
    assert fire_times("0 22 * * *", grace_s=3600).due(at(22, 30)) == Due(at(22))


def test_the_first_look_leaves_a_fire_time_older_than_the_grace() -> None:
    assert fire_times("0 22 * * *", grace_s=3600).due(at(23, 30)) == Due(None)


def test_an_every_schedule_has_no_fire_time_to_catch_up_on_start() -> None:
    fires = fire_times("@every 1h", grace_s=3600)
    assert fires.due(at(10, 30)) == Due(None)
    assert fires.due(at(11, 30)) == Due(at(11, 30))


def test_of_several_fire_times_due_at_once_only_the_latest_runs() -> None:
    assert fire_times("*/10 22 * * *", grace_s=3600).due(at(22, 25)) == Due(at(22, 20))


def test_a_fire_time_missed_beyond_the_tolerance_is_given_up_for_good() -> None:
    fires = fire_times("30 10 * * *")
    fires.dealt_with(at(10, 30))
    late = at(10, 35, day=2)  # five minutes late: beyond the 60 s slack
    assert fires.due(late) == Due(None, missed=at(10, 30, day=2))
    assert fires.due(late + timedelta(seconds=1)) == Due(None)


def test_a_fire_time_a_little_late_still_runs() -> None:
    fires = fire_times("30 10 * * *")
    fires.dealt_with(at(10, 30))
    assert fires.due(at(10, 30, 59, day=2)) == Due(at(10, 30, day=2))


@pytest.mark.parametrize(
    ("expr", "now", "expected"),
    [
        ("30 10 * * *", at(10, 29, 50), 10.0),  # the next fire time is near
        ("30 10 * * *", at(9), 30.0),  # far: the recheck interval
        ("30 10 * * *", at(10, 30, 0), 30.0),  # at the fire time: the next one is a day away
        ("0 0 30 2 *", at(9), 30.0),  # never fires: the recheck interval
    ],
)
def test_the_wait_is_until_the_next_fire_time_at_most_the_recheck(
    expr: str, now: datetime, expected: float
) -> None:
    assert fire_times(expr).seconds_to_wait(now) == expected


def test_a_fire_time_due_and_not_yet_dealt_with_means_no_wait() -> None:
    fires = fire_times("*/1 * * * *")
    fires.dealt_with(at(10, 0))
    assert fires.seconds_to_wait(at(10, 0, 50)) == 10.0
    assert fires.seconds_to_wait(at(10, 1, 30)) == 0.0  # 10:01 is still to run


def test_the_diary_date_of_a_fire_time_is_its_date_in_the_cron_zone() -> None:
    conf = DiaryScheduleConf()
    shanghai = FireTimes(cron.parse("CRON_TZ=Asia/Shanghai 0 2 * * *", "UTC"), Intervals.of(conf))
    assert shanghai.run_date_of(datetime(2024, 3, 9, 18, tzinfo=UTC)) == date(2024, 3, 10)
    assert fire_times("0 2 * * *").run_date_of(at(18, day=9)) == date(2024, 2, 9)


# --- progress --------------------------------------------------------------------------------


def test_the_checkpoint_moves_only_over_avatars_below_which_every_call_is_done() -> None:
    progress = Progress(Checkpoint(10, 5, 1))
    for avatar_id in (11, 12, 13, 14):
        progress.started(avatar_id)
    progress.finished(12, True)
    progress.finished(14, False)
    assert progress.checkpoint == Checkpoint(10, 5, 1)  # 11 is still in flight
    progress.finished(11, False)
    assert progress.checkpoint == Checkpoint(12, 6, 2)
    progress.finished(13, True)
    assert progress.checkpoint == Checkpoint(14, 7, 3)
    assert progress.unsaved == 4


def claimed(checkpoint: Checkpoint = FRESH, resumed: bool = False) -> RunClaim:
    row = DiaryRun(
        run_date=date(2024, 2, 1),
        status=DiaryRunStatus.RUNNING,
        checkpoint_avatar_id=checkpoint.avatar_id,
        success_count=checkpoint.success,
        failure_count=checkpoint.failure,
        total=None,
        owner="host:1",
        fire_time=at(22),
        started_at=at(22),
        heartbeat_at=at(22),
        finished_at=None,
    )
    return RunClaim(row, resumed)


def test_a_run_starts_from_its_claims_checkpoint() -> None:
    run = RunState.begin(claimed(Checkpoint(40, 39, 1), resumed=True), heartbeat_s=5.0, now=100.0)
    assert run.progress.checkpoint == Checkpoint(40, 39, 1)
    assert (run.key.run_date, run.date_text) == (date(2024, 2, 1), "2024-02-01")
    assert run.next_heartbeat == 105.0
    assert run.can_start


def test_the_checkpoint_is_saved_at_each_heartbeat_and_every_checkpoint_every_avatars() -> None:
    run = RunState.begin(claimed(), heartbeat_s=5.0, now=100.0)
    assert not run.save_due(104.9)
    assert run.save_due(105.0)
    assert run.next_heartbeat == 110.0
    for avatar_id in range(1, CHECKPOINT_EVERY + 1):
        run.progress.started(avatar_id)
        run.progress.finished(avatar_id, True)
    assert run.save_due(106.0)
    run.saved(owned=True)
    assert run.progress.unsaved == 0 and not run.save_due(107.0)


def test_a_save_that_finds_the_run_taken_over_stops_new_calls() -> None:
    run = RunState.begin(claimed(), heartbeat_s=5.0, now=0.0)
    run.saved(owned=False)
    assert run.lost and not run.can_start
    assert run.ending() is DiaryRunResult.LOST


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"exhausted": True}, DiaryRunResult.DONE),
        ({"exhausted": True, "skipped": True}, DiaryRunResult.SKIPPED),
        ({}, DiaryRunResult.STOPPED),  # stopped before every avatar started
        ({"query_error": True}, DiaryRunResult.FAILED),
        ({"query_error": True, "lost": True}, DiaryRunResult.LOST),
        ({"exhausted": True, "lost": True}, DiaryRunResult.LOST),
    ],
)
def test_how_a_run_ends_follows_from_why_it_stopped_starting_calls(
    flags: dict[str, bool], expected: DiaryRunResult
) -> None:
    run = RunState.begin(claimed(), heartbeat_s=5.0, now=0.0)
    run.exhausted = flags.get("exhausted", False)
    run.skipped = flags.get("skipped", False)
    run.lost = flags.get("lost", False)
    if flags.get("query_error"):
        run.query_error = StoreError("MySQL 127.0.0.1:1 is unreachable")
    assert run.ending() is expected
