"""The diary run on a real MariaDB and a real Diary simulator: claims, counts, resumes, misfires."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pymysql
import pytest

from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.servers import MariaDBServer, temp_root
from me2_devkit.testing.stack import ManagedProcess, Simulator, cli_argv
from me2_scheduler.clients.diary import DiaryClient
from me2_scheduler.config import Config, RpcClientConf, load_config
from me2_scheduler.states import DiaryRunResult, DiaryRunStatus
from me2_scheduler.storage.diary_runs import Checkpoint, DiaryRunStore, RunKey
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT, ChildContext
from me2_scheduler.workers import diary
from me2_scheduler.workers.diary import DiaryScheduler
from me2_scheduler.workers.diary_progress import CHECKPOINT_EVERY, RunResult

UTC = timezone.utc
NEVER_NEAR = "0 3 1 1 *"  # a cron that does not fire while these tests run
T = TypeVar("T")

CONFIG = """\
Name: scheduler.rpc
Timezone: UTC
Mysql:
  DataSource: root@tcp(127.0.0.1:{mysql_port})/{database}?charset=utf8mb4&parseTime=true
ActionRpc:
  Endpoints: [{diary_address}]
DiaryRpc:
  Endpoints: [{diary_address}]
DiarySchedule:
  CronExpression: "{cron}"
  Concurrency: {concurrency}
  TimeoutSeconds: {timeout_s}
  MisfireGraceSeconds: {grace_s}
  StaleRunSeconds: {stale_s}
Log:
  Level: info
"""


def wait_until(check: Callable[[], T], deadline_s: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.05)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Env:
    """One test's database, config and simulator, and the schedulers it made."""

    mariadb: MariaDBServer
    database: str
    config_path: Path
    config: Config
    sim: SimulatorControl
    made: list[Any] = field(default_factory=list)

    def query(self, sql: str, *args: object) -> list[tuple]:
        return self.mariadb.query(self.database, sql, args or None)

    def seed(self, avatar_ids: range | list[int], status: str = "active") -> None:
        conn = pymysql.connect(
            host="127.0.0.1", port=self.mariadb.port, user="root", database=self.database
        )
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO avatar_schedules (avatar_id, status, next_schedule_time)"
                    " VALUES (%s, %s, '2024-01-01 00:00:00')",
                    [(avatar_id, status) for avatar_id in avatar_ids],
                )
            conn.commit()
        finally:
            conn.close()

    def scheduler(self, **kwargs: Any) -> DiaryScheduler:
        made = DiaryScheduler(self.config, **kwargs)
        self.made.append(made)
        return made

    def runs(self) -> DiaryRunStore:
        store = DiaryRunStore(self.config.mysql)
        self.made.append(store)
        return store

    def calls(self, run_date: str) -> dict[int, int]:
        """Diary calls per avatar for ``run_date``, as the simulator counted them."""
        suffix = f":{run_date}"
        per_key = self.sim.stats().calls_per_key
        return {int(k.split(":")[0]): n for k, n in per_key.items() if k.endswith(suffix)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = cli_argv("diary", *args, "-f", str(self.config_path))
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def diary_simulator() -> Iterator[Simulator]:
    simulator = Simulator("diary", temp_root("me2-diary-sim-")).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def sim(diary_simulator: Simulator) -> Iterator[SimulatorControl]:
    """The module's simulator, answering at once and successfully, with its counts reset."""
    control = SimulatorControl(diary_simulator.address)
    control.configure(latency_ms=0, fail_rate=0.0, fail_avatars=[], hang_avatars=[], hang=False)
    control.reset()
    try:
        yield control
    finally:
        control.close()


@pytest.fixture
def make_env(
    tmp_path: Path,
    mariadb: MariaDBServer,
    database: str,
    diary_simulator: Simulator,
    sim: SimulatorControl,
) -> Iterator[Callable[..., Env]]:
    envs: list[Env] = []

    def make(
        cron: str = NEVER_NEAR,
        concurrency: int = 1,
        timeout_s: float = 5,
        grace_s: float = 0,
        stale_s: float = 120,
    ) -> Env:
        path = tmp_path / "scheduler.yaml"
        path.write_text(
            CONFIG.format(
                mysql_port=mariadb.port,
                database=database,
                diary_address=diary_simulator.address,
                cron=cron,
                concurrency=concurrency,
                timeout_s=timeout_s,
                grace_s=grace_s,
                stale_s=stale_s,
            )
        )
        config = load_config(str(path))
        apply_migrations(config.mysql)
        env = Env(mariadb, database, path, config, sim)
        envs.append(env)
        return env

    yield make
    for env in envs:
        for made in env.made:
            made.close()


def diary_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "me2_scheduler.diary"]


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
    assert result.run_date == date(2024, 3, 10)
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
    start = FakeClock(datetime(2024, 2, 1, 22, 30, tzinfo=UTC))

    result = env.scheduler(clock=start).run_due(start.now)
    restart = FakeClock(datetime(2024, 2, 1, 22, 40, tzinfo=UTC))
    again = env.scheduler(clock=restart, owner="restarted:1").run_due(restart.now)

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
    clock = FakeClock(datetime(2024, 2, 1, 23, 30, tzinfo=UTC))

    assert env.scheduler(clock=clock).run_due(clock.now) is None

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


# --- one run per fire time, takeover and resume -------------------------------------


def test_a_cron_firing_twice_in_a_day_makes_one_run_per_fire_and_a_restart_repeats_neither(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(cron="*/1 22 * * *", grace_s=3600)
    env.seed(range(1, 11))
    first_fire = datetime(2024, 8, 1, 22, 0, tzinfo=UTC)
    clock = FakeClock(first_fire + timedelta(seconds=1))
    scheduler = env.scheduler(clock=clock)

    first = scheduler.run_due(clock.now)
    calls_after_first = env.calls("2024-08-01")
    clock.now = first_fire + timedelta(minutes=1, seconds=1)
    second = scheduler.run_due(clock.now)
    restart = FakeClock(first_fire + timedelta(minutes=1, seconds=30))
    again = env.scheduler(clock=restart, owner="restarted:1").run_due(restart.now)

    assert first is not None and first.result == DiaryRunResult.DONE
    assert second is not None and second.result == DiaryRunResult.DONE
    assert (first.run_date, second.run_date) == (date(2024, 8, 1), date(2024, 8, 1))
    assert calls_after_first == dict.fromkeys(range(1, 11), 1)
    assert again is None
    assert env.calls("2024-08-01") == dict.fromkeys(range(1, 11), 2)
    assert env.query("SELECT fire_time, status, total FROM diary_runs ORDER BY fire_time") == [
        (datetime(2024, 8, 1, 22, 0), DiaryRunStatus.DONE, 10),
        (datetime(2024, 8, 1, 22, 1), DiaryRunStatus.DONE, 10),
    ]


def test_two_schedulers_due_at_the_same_fire_time_at_once_make_one_run(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(cron="0 22 * * *", concurrency=2, grace_s=60)
    env.seed(range(1, 201))
    env.sim.configure(latency_ms=5)
    now = datetime(2024, 8, 2, 22, 0, 1, tzinfo=UTC)
    schedulers = [env.scheduler(clock=FakeClock(now), owner=f"host-{i}:1") for i in range(2)]
    start = threading.Barrier(2)
    results: list[RunResult | None] = []

    def fire(scheduler: DiaryScheduler) -> None:
        start.wait(30)
        results.append(scheduler.run_due(now))

    threads = [threading.Thread(target=fire, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert len(results) == 2
    [ran] = [result for result in results if result is not None]
    assert ran.result == DiaryRunResult.DONE and ran.fire_time == datetime(
        2024, 8, 2, 22, tzinfo=UTC
    )
    assert env.calls("2024-08-02") == dict.fromkeys(range(1, 201), 1)
    assert env.query("SELECT run_date, fire_time, status, total FROM diary_runs") == [
        (date(2024, 8, 2), datetime(2024, 8, 2, 22, 0), DiaryRunStatus.DONE, 200)
    ]


def test_a_manual_run_is_keyed_by_its_request_second_and_refused_while_it_runs_unless_stale(
    make_env: Callable[..., Env],
) -> None:
    runs = make_env(stale_s=60).runs()
    day, stale = date(2024, 8, 4), timedelta(seconds=60)
    asked = datetime(2024, 8, 5, 9, 30, 15, 250000, tzinfo=UTC)  # a past date, run the next day
    later = asked + timedelta(seconds=5)
    much_later = asked + timedelta(seconds=61)

    started, _ = runs.claim_manual(day, "manual:1", asked, asked - stale)
    refused, live = runs.claim_manual(day, "manual:2", later, later - stale)
    resumed, _ = runs.claim_manual(day, "manual:3", much_later, much_later - stale)

    assert started is not None and not started.resumed
    assert started.run.key == RunKey(day, asked.replace(microsecond=0))
    assert refused is None and live is not None and live.owner == "manual:1"
    assert resumed is not None and resumed.resumed and resumed.run.key == started.run.key
    assert [(run.owner, run.status) for run in runs.of_date(day)] == [
        ("manual:3", DiaryRunStatus.RUNNING)
    ]


def test_a_manual_run_takes_over_the_newest_failed_run_of_its_date_and_is_refused_once_one_is_done(
    make_env: Callable[..., Env],
) -> None:
    runs = make_env(stale_s=60).runs()
    day, stale = date(2024, 8, 6), timedelta(seconds=60)
    fires = [datetime(2024, 8, 6, 22, minute, tzinfo=UTC) for minute in (0, 1)]
    for fire in fires:
        runs.claim(RunKey(day, fire), "cron:1", fire, fire - stale)
        runs.fail(RunKey(day, fire), "cron:1", Checkpoint(fire.minute * 10, 5, 0), fire)
    now = fires[1] + timedelta(seconds=30)

    taken, _ = runs.claim_manual(day, "manual:1", now, now - stale)
    assert taken is not None and taken.resumed
    assert taken.run.key == RunKey(day, fires[1]) and taken.run.checkpoint == Checkpoint(10, 5, 0)
    assert runs.finish(taken.run.key, "manual:1", Checkpoint(20, 15, 0), now)
    refused, done = runs.claim_manual(day, "manual:2", now, now - stale)

    assert refused is None and done is not None and done.key == RunKey(day, fires[1])
    assert done.status == DiaryRunStatus.DONE
    assert [run.status for run in runs.of_date(day)] == [DiaryRunStatus.DONE, DiaryRunStatus.FAILED]


def test_a_fresh_run_of_another_owner_is_left_alone_and_a_stale_one_resumes_from_its_checkpoint(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(stale_s=60)
    env.seed(range(1, 801))
    t0 = datetime(2024, 5, 7, 22, tzinfo=UTC)
    runs, key = env.runs(), RunKey(date(2024, 5, 7), t0)
    claim, _ = runs.claim(key, "other-host:1", t0, t0 - timedelta(seconds=60))
    assert claim is not None
    assert runs.save(key, "other-host:1", Checkpoint(500, 490, 10), t0)
    clock = FakeClock(t0 + timedelta(seconds=59))
    scheduler = env.scheduler(clock=clock)

    assert scheduler.run_due(clock.now) is None
    clock.now = t0 + timedelta(seconds=61)
    result = scheduler.run_due(clock.now)

    assert result is not None and result.resumed and result.result == DiaryRunResult.DONE
    assert env.calls("2024-05-07") == dict.fromkeys(range(501, 801), 1)
    assert env.query(
        "SELECT status, success_count, failure_count, total, owner FROM diary_runs"
    ) == [(DiaryRunStatus.DONE, 790, 10, 800, scheduler.owner)]


def test_an_owner_whose_run_was_taken_over_can_no_longer_write_it(
    make_env: Callable[..., Env],
) -> None:
    runs = make_env(stale_s=60).runs()
    t0 = datetime(2024, 5, 8, 22, tzinfo=UTC)
    key = RunKey(date(2024, 5, 8), t0)
    runs.claim(key, "host-a:1", t0, t0 - timedelta(seconds=60))
    later = t0 + timedelta(seconds=61)

    taken, _ = runs.claim(key, "host-b:2", later, later - timedelta(seconds=60))

    assert taken is not None and taken.resumed
    assert not runs.save(key, "host-a:1", Checkpoint(7, 7, 0), later)
    assert not runs.finish(key, "host-a:1", Checkpoint(7, 7, 0), later)
    assert runs.save(key, "host-b:2", Checkpoint(3, 3, 0), later)
    assert runs.save(key, "host-b:2", Checkpoint(3, 3, 0), later)  # unchanged row: still ours
    row = runs.get(key)
    assert (row.status, row.owner, row.checkpoint) == (
        DiaryRunStatus.RUNNING,
        "host-b:2",
        Checkpoint(3, 3, 0),
    )


def test_a_stop_between_avatars_saves_the_checkpoint_and_a_restart_resumes_at_once(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env()
    env.seed(range(1, 301))
    stop = threading.Event()

    class StopAfter150(DiaryClient):
        calls = 0

        def generate(self, avatar_id: int, date: str, timeout_s: float | None = None) -> int:
            diary_id = super().generate(avatar_id, date, timeout_s)
            self.calls += 1
            if self.calls == 150:
                stop.set()  # what SIGTERM does to ctx.stop
            return diary_id

    client = StopAfter150(env.config.diary_rpc)
    first = env.scheduler(stop=stop, client=client).run_for(datetime(2024, 5, 9, 22, tzinfo=UTC))
    stopped = env.runs().get(first.key)
    now = datetime.now(UTC)
    resumed = env.scheduler(owner="restarted:2").run_due(now)

    assert first is not None and first.result == DiaryRunResult.STOPPED
    released = (DiaryRunStatus.RUNNING, None, Checkpoint(150, 150, 0))
    assert (stopped.status, stopped.heartbeat_at, stopped.checkpoint) == released
    assert resumed is not None and resumed.resumed and resumed.result == DiaryRunResult.DONE
    assert env.calls("2024-05-09") == dict.fromkeys(range(1, 301), 1)
    assert env.query("SELECT status, success_count, total FROM diary_runs") == [
        (DiaryRunStatus.DONE, 300, 300)
    ]


def test_a_failure_listing_avatars_logs_the_seed_line_marks_the_run_failed_and_it_is_retried(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env()
    env.seed(range(1, 11))
    fire = datetime(2024, 5, 10, 22, tzinfo=UTC)
    clock = FakeClock(fire)
    scheduler = env.scheduler(clock=clock)
    caplog.set_level(logging.INFO, logger="me2_scheduler.diary")

    env.query("RENAME TABLE avatar_schedules TO avatar_schedules_away")
    failed = scheduler.run_for(fire)
    status_after_failure = env.query("SELECT status FROM diary_runs")
    env.query("RENAME TABLE avatar_schedules_away TO avatar_schedules")
    clock.now = fire + timedelta(seconds=10)
    retried = scheduler.run_due(clock.now)

    assert failed is not None and failed.result == DiaryRunResult.FAILED
    assert status_after_failure == [(DiaryRunStatus.FAILED,)]
    assert any(
        line.startswith("[DiaryScheduler] 查询启用的分身失败: ") for line in diary_lines(caplog)
    )
    assert retried is not None and retried.resumed and retried.result == DiaryRunResult.DONE
    assert env.calls("2024-05-10") == dict.fromkeys(range(1, 11), 1)
    assert env.query("SELECT status, total FROM diary_runs") == [(DiaryRunStatus.DONE, 10)]


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
