"""Diary runs at their fire times on a real MariaDB and a real Diary simulator: counts,
seed log lines, misfires and timeouts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import pytest

from me2_scheduler.states import DiaryRunResult, DiaryRunStatus
from me2_scheduler.storage.diary_runs import Checkpoint

from .fixtures_diary import Env, diary_lines
from .support import FakeClock

UTC = timezone.utc

# --- runs at fire times ------------------------------------------------------------


def test_a_run_over_1000_avatars_with_5_percent_failures_counts_exactly_at_the_fire_time(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env(cron="CRON_TZ=Asia/Shanghai 0 2 * * *", concurrency=4, grace_s=5)
    active = list(range(1, 1001))
    failing = active[::20]  # exactly 5 %
    env.seed(active)
    env.seed(range(5001, 5011), status="paused")
    env.sim.configure(fail_avatars=failing)
    # 02:00 in Shanghai is 18:00 UTC the day before: the diary date is Shanghai's.
    fire = datetime(2024, 3, 9, 18, 0, tzinfo=UTC)
    clock = FakeClock(fire - timedelta(seconds=30))
    scheduler = env.scheduler(clock=clock)
    caplog.set_level(logging.INFO, logger="me2_scheduler.diary")

    assert scheduler.run_due(clock.now) is None
    clock.now = fire + timedelta(seconds=1)
    result = scheduler.run_due(clock.now)

    assert result is not None and result.result == DiaryRunResult.DONE
    assert result.key.run_date == date(2024, 3, 10)
    assert env.query(
        "SELECT status, success_count, failure_count, total, checkpoint_avatar_id"
        " FROM diary_runs WHERE run_date = '2024-03-10'"
    ) == [(DiaryRunStatus.DONE, 950, 50, 1000, 1000)]
    assert env.calls("2024-03-10") == dict.fromkeys(active, 1)
    assert env.sim.stats().total == 1000
    lines = diary_lines(caplog)
    assert "[DiaryScheduler] 开始为 1000 个分身生成日记" in lines
    assert "[DiaryScheduler] 日记生成完成，成功: 950，失败: 50" in lines
    assert "[DiaryScheduler] 分身 2 日记生成成功" in lines
    assert any(line.startswith("[DiaryScheduler] 分身 21 日记生成失败: ") for line in lines)
    clock.now = fire + timedelta(seconds=2)
    assert scheduler.run_due(clock.now) is None  # that fire time is handled
    assert env.sim.stats().total == 1000


def test_run_due_fires_at_the_fire_time_waits_for_the_next_and_skips_one_missed_too_long(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(cron="30 10 * * *")
    env.seed(range(1, 6))
    clock = FakeClock(datetime(2024, 4, 2, 10, 29, 50, tzinfo=UTC))
    scheduler = env.scheduler(clock=clock)

    assert scheduler.run_due(clock.now) is None
    assert scheduler.seconds_to_wait(clock.now) == 10
    clock.now = datetime(2024, 4, 2, 10, 30, 1, tzinfo=UTC)
    assert scheduler.run_due(clock.now).result == DiaryRunResult.DONE
    clock.now = datetime(2024, 4, 2, 10, 30, 30, tzinfo=UTC)
    assert scheduler.run_due(clock.now) is None
    clock.now = datetime(2024, 4, 3, 10, 35, tzinfo=UTC)  # 5 minutes late, grace 0: skipped
    assert scheduler.run_due(clock.now) is None

    assert env.calls("2024-04-02") == dict.fromkeys(range(1, 6), 1)
    assert env.query("SELECT run_date FROM diary_runs") == [(date(2024, 4, 2),)]


def test_a_fire_time_missed_within_the_grace_runs_on_start_and_not_again_after_a_restart(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(cron="0 22 * * *", grace_s=3600)
    env.seed(range(1, 21))

    result = env.run_due_at(datetime(2024, 2, 1, 22, 30, tzinfo=UTC))
    again = env.run_due_at(datetime(2024, 2, 1, 22, 40, tzinfo=UTC), owner="restarted:1")

    assert result is not None and result.result == DiaryRunResult.DONE
    assert again is None
    assert env.query("SELECT status, fire_time, total FROM diary_runs") == [
        (DiaryRunStatus.DONE, datetime(2024, 2, 1, 22, 0), 20)
    ]
    assert env.calls("2024-02-01") == dict.fromkeys(range(1, 21), 1)


def test_a_fire_time_missed_beyond_the_grace_does_not_run_on_start(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(cron="0 22 * * *", grace_s=3600)
    env.seed(range(1, 21))

    assert env.run_due_at(datetime(2024, 2, 1, 23, 30, tzinfo=UTC)) is None

    assert env.query("SELECT COUNT(*) FROM diary_runs") == [(0,)]
    assert env.sim.stats().total == 0


def test_a_hanging_diary_call_times_out_as_a_failure_and_the_run_goes_on(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env(timeout_s=0.5)
    env.seed(range(1, 11))
    env.sim.configure(hang_avatars=[3, 7])
    caplog.set_level(logging.INFO, logger="me2_scheduler.diary")

    result = env.scheduler().run_for(datetime(2024, 5, 5, 22, tzinfo=UTC))

    assert result is not None and result.result == DiaryRunResult.DONE
    assert result.checkpoint == Checkpoint(10, 8, 2)
    assert env.calls("2024-05-05") == dict.fromkeys(range(1, 11), 1)
    failed = [line for line in diary_lines(caplog) if "日记生成失败" in line]
    assert [line.split()[2] for line in failed] == ["3", "7"]
    assert all("DEADLINE_EXCEEDED" in line for line in failed)


def test_zero_active_avatars_logs_the_skip_line_and_finishes_the_run(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env()
    env.seed(range(1, 4), status="paused")
    caplog.set_level(logging.INFO, logger="me2_scheduler.diary")

    result = env.scheduler().run_for(datetime(2024, 5, 6, 22, tzinfo=UTC))

    assert result is not None and result.result == DiaryRunResult.SKIPPED
    assert "[DiaryScheduler] 没有启用的分身，跳过日记生成" in diary_lines(caplog)
    assert env.query("SELECT status, total FROM diary_runs") == [(DiaryRunStatus.DONE, 0)]
    assert env.sim.stats().total == 0
