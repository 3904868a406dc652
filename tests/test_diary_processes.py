"""The diary as real processes: a killed run resumes, two processes make one run, the CLI
runs and shows dates, and the diary role fires on its cron."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from me2_devkit.testing.stack import ManagedProcess, cli_argv
from me2_scheduler.config import RpcClientConf
from me2_scheduler.states import DiaryRunResult, DiaryRunStatus
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT, ChildContext
from me2_scheduler.workers import diary
from me2_scheduler.workers.diary_progress import CHECKPOINT_EVERY

from .fixtures_diary import Env, diary_lines
from .support import FakeClock, wait_until

# --- real processes ------------------------------------------------------------------


def test_a_run_killed_mid_way_resumes_after_stale_run_seconds_repeating_at_most_one_checkpoint(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    env = make_env(concurrency=2, stale_s=2)
    env.seed(range(1, 601))
    env.sim.configure(latency_ms=20)
    argv = cli_argv("diary", "run-now", "-f", str(env.config_path), "--date", "2024-05-01")
    run_now = ManagedProcess(argv, tmp_path / "run-now.log").start()
    try:
        wait_until(lambda: env.sim.stats().total >= 250 or not run_now.alive(), 60, "250 calls")
        assert run_now.alive(), run_now.output()
        os.kill(run_now.pid, signal.SIGKILL)
        run_now.proc.wait(10)
    finally:
        run_now.stop()
    [killed] = env.runs().of_date(date(2024, 5, 1))
    env.sim.configure(latency_ms=0)
    clock = FakeClock(killed.heartbeat_at + timedelta(seconds=0.5))
    scheduler = env.scheduler(clock=clock)

    assert (
        killed.status == DiaryRunStatus.RUNNING and killed.checkpoint_avatar_id >= CHECKPOINT_EVERY
    )
    assert scheduler.run_due(clock.now) is None  # still fresh: not taken over
    clock.now = killed.heartbeat_at + timedelta(seconds=3)
    result = scheduler.run_due(clock.now)

    assert result is not None and result.resumed and result.result == DiaryRunResult.DONE
    calls = env.calls("2024-05-01")
    assert sorted(calls) == list(range(1, 601))
    repeated = [avatar_id for avatar_id, n in calls.items() if n > 1]
    assert all(calls[a] == 2 and a > killed.checkpoint_avatar_id for a in repeated)
    assert len(repeated) <= CHECKPOINT_EVERY + 2  # one checkpoint's worth, plus the window
    assert env.query("SELECT status, success_count + failure_count, total FROM diary_runs") == [
        (DiaryRunStatus.DONE, 600, 600)
    ]


def test_two_processes_running_the_same_date_at_once_make_one_run(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    env = make_env(concurrency=2)
    env.seed(range(1, 301))
    env.sim.configure(latency_ms=10)
    argv = cli_argv("diary", "run-now", "-f", str(env.config_path), "--date", "2024-06-01")
    processes = [ManagedProcess(argv, tmp_path / f"run-now-{i}.log").start() for i in range(2)]
    try:
        codes = [process.proc.wait(120) for process in processes]
    finally:
        for process in processes:
            process.stop()

    assert sorted(codes) == [0, 1], [p.output()[-2000:] for p in processes]
    assert "diary run for 2024-06-01 not started: it is" in processes[codes.index(1)].output()
    assert env.calls("2024-06-01") == dict.fromkeys(range(1, 301), 1)
    assert env.query("SELECT status, total FROM diary_runs") == [(DiaryRunStatus.DONE, 300)]


def test_the_cli_runs_a_date_now_refuses_it_a_second_time_and_shows_the_status(
    make_env: Callable[..., Env],
) -> None:
    env = make_env()
    env.seed(range(1, 51))
    env.sim.configure(fail_avatars=[3])

    first = env.cli("run-now", "--date", "2024-07-01")
    second = env.cli("run-now", "--date", "2024-07-01")
    table = env.cli("status")
    as_json = env.cli("status", "--json")

    assert first.returncode == 0, first.stderr
    assert "diary run for 2024-07-01: done" in first.stdout
    assert "[DiaryScheduler] 日记生成完成，成功: 49，失败: 1" in first.stderr
    assert second.returncode == 1
    assert "not started: it is done (success 49, failure 1)" in second.stderr
    assert env.calls("2024-07-01") == dict.fromkeys(range(1, 51), 1)
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    [record] = json.loads(as_json.stdout)
    columns = ["run_date", "fire_time", "status", "success", "failure", "total", "checkpoint"]
    assert header.split()[:7] == columns
    fire_date, fire_clock = record["fire_time"].split()
    assert row.split()[:8] == ["2024-07-01", fire_date, fire_clock, "done", "49", "1", "50", "50"]
    shown = (record["run_date"], record["status"], record["success"], record["total"])
    assert shown == ("2024-07-01", "done", 49, 50)
    assert f"fire time {record['fire_time']}" in first.stdout


# --- the diary role ----------------------------------------------------------------


def test_the_diary_role_fires_on_its_cron_and_logs_the_seed_start_and_stop_lines(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env(cron="@every 1s")
    env.seed(range(1, 4))
    caplog.set_level(logging.INFO, logger="me2_scheduler.diary")
    ctx = ChildContext("diary", 0)
    codes: list[int] = []
    role = threading.Thread(target=lambda: codes.append(diary.main(env.config, ctx)))
    role.start()
    try:
        wait_until(
            lambda: env.query("SELECT 1 FROM diary_runs WHERE status = 'done'"), 30, "a done run"
        )
    finally:
        ctx.stop.set()
        role.join(30)

    assert codes == [0]
    lines = diary_lines(caplog)
    assert lines[0] == "[DiaryScheduler] 日记调度器启动，Cron 表达式: @every 1s"
    assert lines[-1] == "[DiaryScheduler] 日记调度器已停止"
    assert sum(env.sim.stats().calls_per_avatar.values()) == 3


def test_the_diary_role_cannot_boot_with_an_invalid_cron(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env()
    bad = replace(
        env.config, diary_schedule=replace(env.config.diary_schedule, cron_expression="0 0 * * 7")
    )

    assert diary.main(bad, ChildContext("diary", 0)) == EXIT_CANNOT_BOOT
    assert any("CronExpression" in line for line in diary_lines(caplog))


def test_the_diary_role_without_a_diary_endpoint_idles_with_an_error_line(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env()
    unreachable = replace(env.config, diary_rpc=RpcClientConf())
    ctx = ChildContext("diary", 0)
    ctx.stop.set()

    assert diary.main(unreachable, ctx) == 0
    assert any(line.startswith("[DiaryScheduler] DiaryRpc: ") for line in diary_lines(caplog))
    assert env.query("SELECT COUNT(*) FROM diary_runs") == [(0,)]
