"""The poller: claims due avatars every PollInterval, returns expired leases, sweeps.

Claims are bounded batches moved atomically by one script (DESIGN §3.1); the
ready list is kept short so a claim never waits in it longer than its lease.
Every ScanInterval the safety-net sweep (§3.4) re-adds active avatars that
MySQL says are overdue but Redis has lost, or rebuilds the whole index when
its ``meta`` key is gone.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from me2_scheduler import metrics
from me2_scheduler.config import Config
from me2_scheduler.errors import RedisIndexError, StoreError
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.supervisor.child import ChildContext

log = logging.getLogger("me2_scheduler.poller")

SWEEP_PAGE = 1000
GAUGE_INTERVAL_S = 5.0


def rebuild_index(store: MysqlStore, index: DelayIndex) -> int:
    """Rebuild the whole Redis index from MySQL's active rows; return the row count."""
    rows = ((avatar_id, int(due.timestamp())) for avatar_id, due in store.stream_active())
    count = index.rebuild(rows)
    metrics.INDEX_REBUILDS.inc()
    log.info("index rebuilt from MySQL: %d active avatars", count)
    return count


def sweep(store: MysqlStore, index: DelayIndex, grace_s: float) -> int:
    """Re-add active avatars overdue by more than ``grace_s`` and absent from Redis.

    Returns how many were repaired (a full rebuild counts its rows). Raises
    StoreError or RedisIndexError.
    """
    if not index.has_meta():
        return rebuild_index(store, index)
    before = datetime.fromtimestamp(index.now() - grace_s, timezone.utc)
    repaired, after_id = 0, 0
    while True:
        page = store.overdue(before, limit=SWEEP_PAGE, after_id=after_id)
        if not page:
            return repaired
        due_by_id = {avatar_id: int(due.timestamp()) for avatar_id, due in page}
        for avatar_id in index.absent(list(due_by_id)):
            if index.schedule(avatar_id, due_by_id[avatar_id], only_if_absent=True):
                repaired += 1
                metrics.INDEX_REPAIRED.inc()
                log.warning("sweep: avatar %d was missing from the index; re-added", avatar_id)
        after_id = page[-1][0]


class Poller:
    """One poller loop's state: when the next sweep and gauge refresh are due."""

    def __init__(self, config: Config, store: MysqlStore, index: DelayIndex) -> None:
        self._config = config
        self._store = store
        self._index = index
        self._next_sweep = time.monotonic() + config.schedule.scan_interval
        self._next_gauges = 0.0

    def tick(self) -> int:
        """One round: claim, release expired leases, sweep and refresh gauges when due.

        Returns how many avatars were claimed (a full batch means: poll again now).
        """
        schedule = self._config.schedule
        claimed = self._index.claim_due(
            schedule.claim_batch, schedule.lease_seconds, max_ready=self.max_ready
        )
        released = self._index.release_expired()
        if released:
            metrics.LEASES_EXPIRED.inc(len(released))
            log.warning("leases expired for %d avatars; returned to due", len(released))
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + schedule.scan_interval
            sweep(self._store, self._index, schedule.sweep_grace_seconds)
        if now >= self._next_gauges:
            self._next_gauges = now + GAUGE_INTERVAL_S
            self.refresh_gauges()
        return claimed

    @property
    def max_ready(self) -> int:
        """High-water mark of ``ready``: enough to keep every worker busy for a batch."""
        return max(self._config.schedule.claim_batch, self._config.schedule.max_workers * 4)

    def refresh_gauges(self) -> None:
        """Queue sizes from Redis, avatars by status from MySQL (cheap grouped counts)."""
        for queue, size in self._index.sizes(self._config.schedule.sweep_grace_seconds).items():
            metrics.QUEUE_SIZE.labels(queue=queue).set(size)
        for status, count in self._store.counts_by_status().items():
            metrics.AVATARS.labels(status=status).set(count)
        metrics.AUTO_PAUSED.set(self._store.auto_paused_count())


def main(config: Config, ctx: ChildContext) -> int:
    """Poller process: tick every PollInterval until told to stop."""
    poller = Poller(config, MysqlStore(config.mysql), DelayIndex(config.redis))
    interval = config.schedule.poll_interval
    while not ctx.stopping:
        try:
            full = poller.tick() >= config.schedule.claim_batch
        except (StoreError, RedisIndexError) as exc:
            log.error("poller: %s", exc)
            metrics.ERRORS.labels(role="poller", kind=type(exc).__name__).inc()
            full = False
        if not full:
            ctx.wait(interval)
    return 0
