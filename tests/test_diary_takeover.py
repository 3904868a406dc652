"""One diary run per fire time: concurrent schedulers, manual runs, takeover of stale runs and
resume from the checkpoint, on a real MariaDB and a real Diary simulator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import pytest

from me2_scheduler.clients.diary import DiaryClient
from me2_scheduler.states import DiaryRunResult, DiaryRunStatus
from me2_scheduler.storage.diary_runs import Checkpoint, RunKey

from .fixtures_diary import Env, diary_lines
from .support import FakeClock, run_together

UTC = timezone.utc

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
    restart = first_fire + timedelta(minutes=1, seconds=30)
    again = env.run_due_at(restart, owner="restarted:1")

    assert first is not None and first.result == DiaryRunResult.DONE
    assert second is not None and second.result == DiaryRunResult.DONE
    assert (first.key.run_date, second.key.run_date) == (date(2024, 8, 1), date(2024, 8, 1))
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
    results = run_together(*[lambda s=s: s.run_due(now) for s in schedulers])

    assert len(results) == 2
    [ran] = [result for result in results if result is not None]
    assert ran.result == DiaryRunResult.DONE and ran.key.fire_time == datetime(
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
