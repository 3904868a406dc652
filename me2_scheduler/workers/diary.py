"""The diary run (the seed's DiaryScheduler, DESIGN §5): each avatar's diary at each fire time.

At each fire time of ``DiarySchedule.CronExpression`` (robfig/cron's meaning,
read in its ``CRON_TZ`` or the service ``Timezone``) the run of that fire time
(its date in the cron's zone, and the fire time itself) is claimed in
``diary_runs``, so one host runs it once: the daily cron makes one run per
date, a cron firing several times a day one run per fire, as the seed did. Active
avatars are streamed in ascending avatar_id pages from the checkpoint, and
``Diary.GenerateAvatarDiary`` is called for each, ``Concurrency`` at once,
with ``TimeoutSeconds`` per call. Progress is saved every ``CHECKPOINT_EVERY``
avatars and at shutdown; the owner heartbeats, and a run whose owner stopped
heartbeating for ``StaleRunSeconds`` is taken over from its checkpoint. A
fire time missed while the service was down runs (or resumes) on start when it
is at most ``MisfireGraceSeconds`` old and its run is not finished.

The clock is injectable: ``DiaryScheduler.run_due(now)`` does what is due at
``now``, so tests never wait for wall-clock fire times. Which fire time is due
(``diary_timing``) and how far a run got (``diary_progress``) are plain values
apart from this module's MySQL and gRPC calls. It runs in its own process (the
``diary`` role), so a slow or failing Diary never touches dispatching.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import date, datetime

from me2_scheduler import metrics
from me2_scheduler.clients.channels import resolve_target
from me2_scheduler.clients.diary import DiaryClient
from me2_scheduler.clock import utc_now
from me2_scheduler.config import Config, rpc_source, service_timezone
from me2_scheduler.cron import Schedule, parse
from me2_scheduler.errors import SchedulerError, StoreError
from me2_scheduler.states import DiaryRunResult, Outcome, Status
from me2_scheduler.storage.diary_runs import DiaryRun, DiaryRunStore, RunClaim, RunKey
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT, EXIT_OK, ChildContext
from me2_scheduler.workers.diary_progress import RunResult, RunState
from me2_scheduler.workers.diary_timing import FireTimes, Intervals

log = logging.getLogger("me2_scheduler.diary")

ID_PAGE = 500  # active avatar_ids read per query

Clock = Callable[[], datetime]


def default_owner() -> str:
    """``host:pid``: who holds a run, as written in ``diary_runs.owner``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def parse_schedule(config: Config) -> Schedule:
    """The diary cron, in its ``CRON_TZ`` or the service zone. Raises ValueError if invalid."""
    return parse(config.diary_schedule.cron_expression, service_timezone(config))


class DiaryScheduler:
    """Fires diary runs at the cron's times; every clock reading comes from ``clock``.

    Raises ValueError at construction when the cron expression is invalid.
    Servers are reached only when a method needs them.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: MysqlStore | None = None,
        runs: DiaryRunStore | None = None,
        client: DiaryClient | None = None,
        clock: Clock = utc_now,
        stop: threading.Event | None = None,
        owner: str | None = None,
    ) -> None:
        self.schedule = parse_schedule(config)
        self._conf = config.diary_schedule
        self._intervals = Intervals.of(self._conf)
        self._fires = FireTimes(self.schedule, self._intervals)
        self.recheck_s = self._intervals.recheck_s
        self._store = store or MysqlStore(config.mysql)
        self._runs = runs or DiaryRunStore(config.mysql)
        self._client = client or DiaryClient(config.diary_rpc)
        self._clock = clock
        self._stop = stop or threading.Event()
        self.owner = owner or default_owner()

    def close(self) -> None:
        """Close this process's connections and channel."""
        self._client.close()
        self._runs.close()
        self._store.close()

    # -- when ----------------------------------------------------------------

    def serve(self) -> None:
        """Run what is due, then sleep until the next fire time or recheck, until stopped."""
        while not self._stop.is_set():
            try:
                self.run_due(self._clock())
            except StoreError as exc:  # the claim failed: the fire time is tried again
                log.error("[DiaryScheduler] cannot claim or look up diary runs: %s", exc)
                metrics.ERRORS.labels(role="diary", kind=type(exc).__name__).inc()
                self._stop.wait(self.recheck_s)
                continue
            self._stop.wait(self.seconds_to_wait(self._clock()))

    def run_due(self, now: datetime) -> RunResult | None:
        """Run the latest fire time due at ``now``, else take over an abandoned run.

        The first call is the misfire catch-up: a fire time up to
        ``MisfireGraceSeconds`` before ``now`` is due. Returns None when
        nothing ran here. Raises StoreError when a run cannot be claimed.
        """
        due = self._fires.due(now)
        if due.missed is not None:
            log.warning(
                "[DiaryScheduler] fire time %s was missed for too long; skipped", due.missed
            )
        if due.fire is None:
            return self.resume_abandoned(now)
        result = self.run_for(due.fire)
        self._fires.dealt_with(due.fire)
        return result

    def seconds_to_wait(self, now: datetime) -> float:
        """Seconds until the next fire time, at most the recheck interval."""
        return self._fires.seconds_to_wait(now)

    def resume_abandoned(self, now: datetime) -> RunResult | None:
        """Take over the newest stale or recently failed run, if any. Raises StoreError."""
        row = self._runs.resumable(now - self._intervals.stale, now - self._intervals.tolerance)
        if row is None:
            return None
        log.warning(
            "[DiaryScheduler] diary run for %s is %s; taking it over", row.key, row.summary()
        )
        return self.run_for(row.fire_time, row.run_date)

    # -- claiming --------------------------------------------------------------

    def run_date_of(self, fire_time: datetime) -> date:
        """The diary date of a fire time: its date in the cron's zone."""
        return self._fires.run_date_of(fire_time)

    def claim(self, key: RunKey) -> tuple[RunClaim | None, DiaryRun | None]:
        """Claim the run of ``key`` for this process (see ``DiaryRunStore.claim``).

        Raises StoreError.
        """
        now = self._clock()
        return self._runs.claim(key, self.owner, now, now - self._intervals.stale)

    def claim_manual(self, run_date: date) -> tuple[RunClaim | None, DiaryRun | None]:
        """Claim a manual run of ``run_date``, keyed by the clock's whole second.

        See ``DiaryRunStore.claim_manual``. Raises StoreError.
        """
        now = self._clock().replace(microsecond=0)
        stale_before = now - self._intervals.stale
        return self._runs.claim_manual(run_date, self.owner, now, stale_before)

    def run_for(self, fire_time: datetime, run_date: date | None = None) -> RunResult | None:
        """Claim and run the fire time ``fire_time`` (of its date, or ``run_date``).

        None if the run is not ours (done, or live elsewhere). Raises
        StoreError when the claim fails; errors after it end the run as ``failed``.
        """
        key = RunKey(run_date or self.run_date_of(fire_time), fire_time)
        claim, row = self.claim(key)
        if claim is None:
            state = row.summary() if row else "gone"
            log.info("[DiaryScheduler] diary run for %s is %s; not starting it", key, state)
            return None
        return self.execute(claim)

    # -- the run -------------------------------------------------------------

    def execute(self, claim: RunClaim) -> RunResult:
        """Generate the diary of every active avatar after the claim's checkpoint."""
        run = RunState.begin(claim, self._intervals.heartbeat_s, time.monotonic())
        if claim.resumed:
            log.info(
                "[DiaryScheduler] diary run for %s resumes after %s", run.key, claim.run.checkpoint
            )
        try:
            count = self._store.counts_by_status()[Status.ACTIVE]
        except StoreError as exc:
            run.query_error = exc
        else:
            if count == 0:
                log.info("[DiaryScheduler] 没有启用的分身，跳过日记生成")
                run.skipped = run.exhausted = True
            else:
                log.info("[DiaryScheduler] 开始为 %d 个分身生成日记", count)
                self._call_all(run)
        result = self._conclude(run)
        metrics.DIARY_RUNS.labels(result=result).inc()
        return RunResult(run.key, result, run.progress.checkpoint, claim.resumed)

    def _active_ids(self, after_id: int) -> Iterator[int]:
        """Active avatar_ids above ``after_id``, ascending, one page in memory at a time."""
        while page := self._store.active_ids_after(after_id, ID_PAGE):
            yield from page
            after_id = page[-1]

    def _call_all(self, run: RunState) -> None:
        """Keep ``Concurrency`` calls going until every avatar started, or the run must end."""
        ids = self._active_ids(run.progress.checkpoint.avatar_id)
        in_flight: dict[Future[bool], int] = {}
        with ThreadPoolExecutor(self._conf.concurrency, thread_name_prefix="diary") as pool:
            while True:
                self._fill(run, ids, pool, in_flight)
                if not in_flight:
                    return
                finished, _ = wait(in_flight, run.heartbeat_s, return_when=FIRST_COMPLETED)
                for future in finished:
                    run.progress.finished(in_flight.pop(future), future.result())
                self._keep_alive(run)

    def _fill(
        self,
        run: RunState,
        ids: Iterator[int],
        pool: ThreadPoolExecutor,
        in_flight: dict[Future[bool], int],
    ) -> None:
        """Start calls up to the window; SIGTERM (``stop``) starts no more."""
        while len(in_flight) < self._conf.concurrency and run.can_start:
            if self._stop.is_set():
                return
            try:
                avatar_id = next(ids, None)
            except StoreError as exc:
                run.query_error = exc
                return
            if avatar_id is None:
                run.exhausted = True
                return
            run.progress.started(avatar_id)
            in_flight[pool.submit(self._generate, avatar_id, run.date_text)] = avatar_id

    def _generate(self, avatar_id: int, date_text: str) -> bool:
        """One Diary call; True on success. Every failure is logged and counted, never raised."""
        try:
            self._client.generate(avatar_id, date_text, timeout_s=self._conf.timeout_seconds)
        except Exception as exc:  # any error fails this avatar only, as in the seed
            detail = str(exc) if isinstance(exc, SchedulerError) else f"{type(exc).__name__}: {exc}"
            log.error(
                "[DiaryScheduler] 分身 %d 日记生成失败: %s",
                avatar_id,
                detail,
                extra={"avatar_id": avatar_id},
            )
            metrics.DIARY_AVATARS.labels(result=Outcome.FAILURE).inc()
            return False
        log.info("[DiaryScheduler] 分身 %d 日记生成成功", avatar_id, extra={"avatar_id": avatar_id})
        metrics.DIARY_AVATARS.labels(result=Outcome.SUCCESS).inc()
        return True

    def _keep_alive(self, run: RunState) -> None:
        """Save the checkpoint every ``CHECKPOINT_EVERY`` avatars, heartbeat on time."""
        if not run.save_due(time.monotonic()):
            return
        owned = self._write(run, self._runs.save, self._clock())
        if owned is None:
            return  # MySQL failed: tried again at the next heartbeat
        run.saved(owned)
        if not owned:
            log.warning("[DiaryScheduler] diary run for %s was taken over; stopping", run.key)

    def _write(self, run: RunState, method: Callable[..., bool], *args: object) -> bool | None:
        """Call an owner write of ``DiaryRunStore``; None (logged) when MySQL failed."""
        try:
            return method(run.key, self.owner, run.progress.checkpoint, *args)
        except StoreError as exc:
            log.error("[DiaryScheduler] diary run for %s: %s", run.key, exc)
            metrics.ERRORS.labels(role="diary", kind=type(exc).__name__).inc()
            return None

    def _conclude(self, run: RunState) -> DiaryRunResult:
        """Record how the run ended; return the result."""
        ending = run.ending()
        if ending is DiaryRunResult.FAILED:
            log.error("[DiaryScheduler] 查询启用的分身失败: %s", run.query_error)
            self._write(run, self._runs.fail, self._clock())
        elif ending is DiaryRunResult.STOPPED:
            self._write(run, self._runs.release)
            cp = run.progress.checkpoint
            log.info("[DiaryScheduler] diary run for %s stopped after %s", run.key, cp)
        elif ending is not DiaryRunResult.LOST:
            return self._finish(run, ending)
        return ending

    def _finish(self, run: RunState, ending: DiaryRunResult) -> DiaryRunResult:
        """Mark the run done; ``ending`` unless that write fails or finds the run not ours."""
        now = self._clock()
        if not self._write(run, self._runs.finish, now):
            return DiaryRunResult.FAILED
        cp = run.progress.checkpoint
        log.info("[DiaryScheduler] 日记生成完成，成功: %d，失败: %d", cp.success, cp.failure)
        if run.claim.run.started_at is not None:
            elapsed = (now - run.claim.run.started_at).total_seconds()
            metrics.DIARY_RUN_DURATION.observe(max(0.0, elapsed))
        metrics.DIARY_LAST_SUCCESS.set(now.timestamp())
        return ending


def rpc_problem(config: Config) -> str | None:
    """Why the Diary service cannot be reached as configured, or None."""
    try:
        resolve_target(config.diary_rpc)
    except SchedulerError as exc:
        return str(exc)
    return None


def _announce_rpc(config: Config) -> bool:
    """Log where diaries are asked for (one line); False when they cannot be asked anywhere."""
    source = rpc_source(config.diary_rpc)
    if not source:
        log.warning(
            "[DiaryScheduler] DiaryRpc: not configured (no Endpoints, Target or Etcd, and no"
            " ActionRpc.Etcd to find diary.rpc in), diaries are not written"
        )
        return False
    problem = rpc_problem(config)
    if problem is not None:
        log.error("[DiaryScheduler] DiaryRpc: %s; diaries are not written", problem)
        return False
    log.info("[DiaryScheduler] DiaryRpc: %s", source)
    return True


def main(config: Config, ctx: ChildContext) -> int:
    """The ``diary`` role: fire diary runs at the cron's times until told to stop."""
    try:
        scheduler = DiaryScheduler(config, stop=ctx.stop)
    except ValueError as exc:
        log.error("[DiaryScheduler] DiarySchedule.CronExpression: %s; cannot start", exc)
        return EXIT_CANNOT_BOOT
    log.info(
        "[DiaryScheduler] 日记调度器启动，Cron 表达式: %s", config.diary_schedule.cron_expression
    )
    if scheduler.schedule.next(utc_now()) is None:
        # robfig accepts such an expression (e.g. "0 0 30 2 *") and never fires it.
        log.warning("[DiaryScheduler] the cron expression never fires: no diary will be written")
    try:
        if _announce_rpc(config):
            scheduler.serve()
        else:
            ctx.stop.wait()
    finally:
        scheduler.close()
        log.info("[DiaryScheduler] 日记调度器已停止")
    return EXIT_OK
