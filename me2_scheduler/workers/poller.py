"""The poller: claims due avatars every PollInterval, returns expired leases, sweeps.

Claims are bounded batches moved atomically by one script (DESIGN §3.1); the
ready list is kept short so a claim never waits in it longer than its lease.
Every ScanInterval the safety-net sweep (§3.4) re-adds active avatars that
MySQL says are overdue but Redis has lost, or rebuilds the whole index when
its ``meta`` key is gone.

The poller also keeps the gauges current, so that a scrape only reads files:
queue sizes every ``QUEUE_GAUGE_INTERVAL_S`` (one cheap script), the counts
from MySQL every ``COUNT_GAUGE_INTERVAL_S`` (``counts_by_status`` reads an
index entry of every row). And it applies ``History.RetentionDays`` (0 keeps
history forever): at most once an hour it deletes the older history, one
small batch per tick, so claims never wait for a long prune.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from me2_scheduler import metrics
from me2_scheduler.clock import utc_now
from me2_scheduler.config import Config
from me2_scheduler.errors import RedisIndexError, StoreError
from me2_scheduler.states import DiaryRunStatus, PauseReason
from me2_scheduler.storage import reconcile
from me2_scheduler.storage.diary_runs import DiaryRunStore
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore, leased_store
from me2_scheduler.supervisor.child import ChildContext

log = logging.getLogger("me2_scheduler.poller")

QUEUE_GAUGE_INTERVAL_S = 2.0
COUNT_GAUGE_INTERVAL_S = 15.0
PRUNE_INTERVAL_S = 3600.0
PRUNE_BATCH = 2000  # history rows per DELETE transaction, one transaction per tick
DIARY_RUNS_LOOKED_AT = 10  # the last success is searched among this many recent runs
# Due times are whole seconds (DATETIME), so an idle poller ticks just after each
# PollInterval boundary of Redis's clock: an avatar is claimed within ALIGN_AFTER_S
# of its time, not up to a whole interval later. The host's offset from Redis TIME
# is re-read every CLOCK_CHECK_S.
ALIGN_AFTER_S = 0.01
CLOCK_CHECK_S = 60.0
# After a tick that claimed some (but not a full batch), more may be due or held
# back by the ready high-water mark: tick again this soon rather than a whole
# interval later, so the cap never starves the workers.
BUSY_POLL_S = 0.05

Clock = Callable[[], float]


def next_tick_delay(now: float, interval: float, after: float = ALIGN_AFTER_S) -> float:
    """Seconds from ``now`` (epoch s) to the next multiple of ``interval``, plus ``after``.

    A non-positive ``interval`` means no wait.
    """
    if interval <= 0:
        return 0.0
    target = (math.floor((now - after) / interval) + 1) * interval + after
    return max(0.0, target - now)


def rebuild_index(store: MysqlStore, index: DelayIndex) -> int:
    """Rebuild the whole Redis index from MySQL's active rows, counted; return the row count.

    Raises StoreError or RedisIndexError.
    """
    count = reconcile.rebuild(store, index)
    metrics.INDEX_REBUILDS.inc()
    log.info("index rebuilt from MySQL: %d active avatars", count)
    return count


def sweep(store: MysqlStore, index: DelayIndex, grace_s: float) -> int:
    """The safety-net sweep (``reconcile.sweep``), counted and logged.

    Returns how many were repaired (a full rebuild counts its rows). Raises
    StoreError or RedisIndexError.
    """
    swept = reconcile.sweep(store, index, grace_s)
    if swept.rebuilt is not None:
        metrics.INDEX_REBUILDS.inc()
        log.info("index rebuilt from MySQL: %d active avatars", swept.rebuilt)
        return swept.rebuilt
    for avatar_id in swept.repaired:
        log.warning("sweep: avatar %d was missing from the index; re-added", avatar_id)
    metrics.INDEX_REPAIRED.inc(len(swept.repaired))
    return len(swept.repaired)


class Every:
    """Due at most once per ``interval`` seconds of ``clock``; due at once unless ``first`` says."""

    def __init__(self, interval: float, clock: Clock, first: float = 0.0) -> None:
        self.interval = interval
        self._clock = clock
        self._next = clock() + first

    def due(self) -> bool:
        """True (and the next one is an interval away) when the time has come."""
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True


class HistoryPruner:
    """``History.RetentionDays``: once an hour, delete older history a batch per ``step``.

    A round starts when the hour is up and ends with the first batch that is
    not full; ``retention_days`` 0 never prunes.
    """

    def __init__(
        self, store: MysqlStore, retention_days: int, clock: Clock, wall: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._retention = timedelta(days=retention_days)
        self._every = Every(PRUNE_INTERVAL_S, clock)
        self._wall = wall
        self._cutoff: datetime | None = None  # set while a round is under way
        self._round_total = 0

    def step(self) -> int:
        """Delete at most one batch if a round is due or under way; return how many.

        Raises StoreError (the round goes on at the next step).
        """
        if not self._retention:
            return 0
        if self._cutoff is None:
            if not self._every.due():
                return 0
            self._cutoff, self._round_total = self._wall() - self._retention, 0
        deleted = self._store.prune_history(self._cutoff, PRUNE_BATCH, max_batches=1)
        metrics.HISTORY_PRUNED.inc(deleted)
        self._round_total += deleted
        if deleted < PRUNE_BATCH:
            if self._round_total:
                log.info(
                    "history: pruned %d dispatches started before %s (History.RetentionDays=%d)",
                    self._round_total,
                    self._cutoff.isoformat(),
                    self._retention.days,
                )
            self._cutoff = None
        return deleted


class Poller:
    """One poller loop's state: when the next sweep, gauge refresh and prune are due.

    ``clock`` is monotonic seconds and ``wall`` the current UTC time; both are
    injectable for tests. ``diary_runs`` (optional) feeds the diary gauge.
    """

    def __init__(
        self,
        config: Config,
        store: MysqlStore,
        index: DelayIndex,
        *,
        diary_runs: DiaryRunStore | None = None,
        clock: Clock = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self._config = config
        self._store = store
        self._index = index
        self._diary_runs = diary_runs
        self._wall = wall
        self._redis_offset = 0.0  # Redis TIME minus this host's clock, seconds
        self._clock_check = Every(CLOCK_CHECK_S, clock)
        scan = config.schedule.scan_interval
        self._sweep = Every(scan, clock, first=scan)
        self._queue_gauges = Every(QUEUE_GAUGE_INTERVAL_S, clock)
        self._count_gauges = Every(COUNT_GAUGE_INTERVAL_S, clock)
        self.pruner = HistoryPruner(store, config.history.retention_days, clock, wall)

    def tick(self) -> int:
        """One round: claim, release expired leases; sweep, gauges and prune when due.

        Returns how many avatars were claimed (a full batch means: poll again
        now). Raises StoreError or RedisIndexError.
        """
        schedule = self._config.schedule
        claimed = self._index.claim_due(
            schedule.claim_batch, schedule.lease_seconds, max_ready=self.max_ready
        )
        released = self._index.release_expired()
        if released:
            metrics.LEASES_EXPIRED.inc(len(released))
            log.warning("leases expired for %d avatars; returned to due", len(released))
        if self._sweep.due():
            sweep(self._store, self._index, schedule.sweep_grace_seconds)
        if self._queue_gauges.due():
            self.refresh_queue_gauges()
        if self._count_gauges.due():
            self.refresh_count_gauges()
        self.pruner.step()
        return claimed

    def pause_after(self, claimed: int) -> float:
        """How long to wait before the next tick, given how many this one claimed.

        A full batch: none (more are due now). Some, or none while the ready
        list still holds claims (the high-water mark may be what held this
        tick back, and the workers drain it within the interval):
        ``BUSY_POLL_S``. None with the workers idle: until just after the next
        PollInterval boundary of Redis's clock. Raises RedisIndexError.
        """
        schedule = self._config.schedule
        if claimed >= schedule.claim_batch:
            return 0.0
        if claimed > 0 or self._index.ready_length() > 0:
            return min(schedule.poll_interval, BUSY_POLL_S)
        if self._clock_check.due():
            self._redis_offset = self._index.now() - self._wall().timestamp()
        now = self._wall().timestamp() + self._redis_offset
        return next_tick_delay(now, schedule.poll_interval)

    @property
    def max_ready(self) -> int:
        """High-water mark of ``ready``: enough to keep every worker busy for a batch."""
        return max(self._config.schedule.claim_batch, self._config.schedule.max_workers * 4)

    def refresh_queue_gauges(self) -> None:
        """Queue sizes from Redis, read at one instant. Raises RedisIndexError."""
        for queue, size in self._index.sizes(self._config.schedule.sweep_grace_seconds).items():
            metrics.QUEUE_SIZE.labels(queue=queue).set(size)

    def refresh_count_gauges(self) -> None:
        """Avatars by status and by pause reason, and the last diary success, from MySQL.

        Raises StoreError.
        """
        for status, count in self._store.counts_by_status().items():
            metrics.AVATARS.labels(status=status).set(count)
        paused = self._store.paused_by_reason()
        for reason, count in paused.items():
            metrics.PAUSED_AVATARS.labels(reason=reason).set(count)
        metrics.AUTO_PAUSED.set(paused[PauseReason.FAILURES])
        if self._diary_runs is not None:
            runs = self._diary_runs.latest(DIARY_RUNS_LOOKED_AT)
            done = [r for r in runs if r.status == DiaryRunStatus.DONE]
            finished = [r.finished_at for r in done if r.finished_at]
            if finished:  # MySQL knows runs of other hosts and of before a restart
                metrics.DIARY_LAST_SUCCESS.set(max(finished).timestamp())


def main(config: Config, ctx: ChildContext) -> int:
    """Poller process: tick every PollInterval (aligned, see ``pause_after``) until told to stop."""
    poller = Poller(
        config,
        # Its MySQL work (sweep, gauges, prune) may hold claiming up no longer than a lease.
        leased_store(config.mysql, config.schedule.lease_seconds),
        DelayIndex(config.redis),
        diary_runs=DiaryRunStore(config.mysql),
    )
    interval = config.schedule.poll_interval
    while not ctx.stopping:
        try:
            pause = poller.pause_after(poller.tick())
        except (StoreError, RedisIndexError) as exc:
            log.error("poller: %s", exc)
            metrics.ERRORS.labels(role="poller", kind=type(exc).__name__).inc()
            pause = interval
        if pause > 0:
            ctx.wait(pause)
    return 0
