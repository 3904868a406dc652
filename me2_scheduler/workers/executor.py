"""The worker: takes claimed avatars from ``ready`` and dispatches them (the seed's TaskExecutor).

One dispatch (DESIGN §3.2): begin the claim (a stale one is dropped), read the
row and check it still wants this slot, call Action with the idempotency key,
record the outcome in MySQL, then settle the avatar in Redis where MySQL says.
``TriggerSchedule`` goes through the same ``Dispatcher`` so a manual dispatch
is recorded exactly as a worker records one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from me2_scheduler import metrics, policy
from me2_scheduler.clients.action import ActionClient, ActionResult
from me2_scheduler.config import Config
from me2_scheduler.errors import DownstreamError, RedisIndexError, StoreError
from me2_scheduler.storage.index import Claim, DelayIndex
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow
from me2_scheduler.supervisor.child import ChildContext

log = logging.getLogger("me2_scheduler.executor")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class DispatchOutcome:
    """What one dispatch did: ``result`` is success/failure/skipped."""

    avatar_id: int
    result: str
    action: ActionResult | None = None
    error: str = ""
    unavailable: bool = False  # a failure because Action was unreachable or too slow
    auto_paused: bool = False
    row: ScheduleRow | None = None


class Dispatcher:
    """Dispatches claimed avatars; shared by the workers and ``TriggerSchedule``."""

    def __init__(
        self,
        config: Config,
        store: MysqlStore,
        index: DelayIndex,
        action: ActionClient,
        *,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        display: Callable[[datetime | None], str] = str,
    ) -> None:
        self._config = config
        self._store = store
        self.index = index
        self._action = action
        self._clock = clock
        self._rng = rng or random.Random()
        self._display = display

    def run_claim(self, claim: Claim) -> DispatchOutcome:
        """Dispatch one claim popped from ``ready``, unless MySQL says it is no longer due.

        Raises StoreError or RedisIndexError when a server fails mid-way; the
        lease then expires and the slot is dispatched again with the same key.
        """
        row = self._store.get(claim.avatar_id)
        if not self._wants_slot(row, claim):
            self._settle(claim, row)
            metrics.DISPATCHES.labels(result="skipped").inc()
            return DispatchOutcome(claim.avatar_id, "skipped", row=row)
        # A worker starved of CPU since pick-up may have outlived its lease, and
        # the slot may be with another worker now: renew the lease right before
        # Action, or learn that it is gone and leave the slot to its new holder.
        if not self.index.begin(claim, self._config.schedule.lease_seconds):
            metrics.DISPATCHES.labels(result="skipped").inc()
            return DispatchOutcome(claim.avatar_id, "skipped", row=row)
        return self.dispatch(row, claim, trigger="auto")

    @staticmethod
    def _wants_slot(row: ScheduleRow | None, claim: Claim) -> bool:
        """The pick-up check: active, and not already moved past the claimed slot."""
        if row is None or row.status != policy.ACTIVE:
            return False
        return epoch(row.next_schedule_time) <= claim.planned_at

    def dispatch(self, row: ScheduleRow, claim: Claim, trigger: str) -> DispatchOutcome:
        """Call Action for ``row``'s avatar, record the outcome, settle Redis."""
        avatar_id = row.avatar_id
        planned_at = datetime.fromtimestamp(claim.planned_at, timezone.utc)
        key = policy.idempotency_key(avatar_id, planned_at)
        started_at = self._clock()
        metrics.DISPATCH_LAG.observe(max(0.0, (started_at - planned_at).total_seconds()))
        log.info("[TaskExecutor] 开始调度分身: %d", avatar_id, extra={"avatar_id": avatar_id})
        began = time.perf_counter()
        try:
            result = self._action.schedule_action(avatar_id, key, trigger)
        except DownstreamError as exc:
            metrics.ACTION_DURATION.observe(time.perf_counter() - began)
            return self._failed(row, claim, trigger, started_at, key, exc)
        metrics.ACTION_DURATION.observe(time.perf_counter() - began)
        return self._succeeded(row, claim, trigger, started_at, key, result)

    def _succeeded(
        self,
        row: ScheduleRow,
        claim: Claim,
        trigger: str,
        started_at: datetime,
        key: str,
        result: ActionResult,
    ) -> DispatchOutcome:
        finished_at = self._clock()
        schedule = self._config.action_schedule
        next_time = policy.next_due(
            finished_at, schedule.min_interval_hours, schedule.max_interval_hours, self._rng
        )
        recorded = self._store.record_success(
            row.avatar_id,
            expected_version=row.version,
            trigger=trigger,
            planned_at=_planned(claim),
            started_at=started_at,
            finished_at=finished_at,
            action_type=result.action_type,
            action_id=result.action_id,
            next_time=next_time,
            idempotency_key=key,
        )
        self._settle(claim, recorded.row)
        if recorded.duplicate:
            return self._duplicate(claim, key, recorded.row)
        metrics.DISPATCHES.labels(result="success").inc()
        log.info(
            "[TaskExecutor] 分身 %d 调度成功，行为类型: %s，下次调度: %s",
            row.avatar_id,
            result.action_type,
            self._display(recorded.row.next_schedule_time),
            extra={"avatar_id": row.avatar_id},
        )
        return DispatchOutcome(row.avatar_id, "success", action=result, row=recorded.row)

    def _failed(
        self,
        row: ScheduleRow,
        claim: Claim,
        trigger: str,
        started_at: datetime,
        key: str,
        exc: DownstreamError,
    ) -> DispatchOutcome:
        error = str(exc)
        finished_at = self._clock()
        schedule = self._config.schedule
        recorded = self._store.record_failure(
            row.avatar_id,
            expected_version=row.version,
            trigger=trigger,
            planned_at=_planned(claim),
            started_at=started_at,
            finished_at=finished_at,
            error=error,
            retry_time=policy.retry_due(finished_at, schedule.retry_delay_seconds),
            max_consecutive_failures=schedule.max_consecutive_failures,
            idempotency_key=key,
        )
        self._settle(claim, recorded.row)
        if recorded.duplicate:
            return self._duplicate(claim, key, recorded.row)
        metrics.DISPATCHES.labels(result="failure").inc()
        extra = {"avatar_id": row.avatar_id}
        log.error("[TaskExecutor] 分身 %d 调度失败: %s", row.avatar_id, error, extra=extra)
        if recorded.auto_paused:
            log.error(
                "[TaskExecutor] 分身 %d 连续失败 %d 次，暂停调度",
                row.avatar_id,
                recorded.row.failed_count,
                extra=extra,
            )
        return DispatchOutcome(
            row.avatar_id,
            "failure",
            error=error,
            unavailable=exc.unavailable,
            auto_paused=recorded.auto_paused,
            row=recorded.row,
        )

    @staticmethod
    def _duplicate(claim: Claim, key: str, row: ScheduleRow) -> DispatchOutcome:
        """Another worker recorded this slot first (this one outlived its lease): drop it."""
        log.warning("[TaskExecutor] slot %s was already recorded; not counted again", key)
        metrics.DISPATCHES.labels(result="skipped").inc()
        return DispatchOutcome(claim.avatar_id, "skipped", row=row)

    def _settle(self, claim: Claim, row: ScheduleRow | None) -> None:
        """End the lease, leaving the avatar in ``due`` where MySQL says, or nowhere.

        A stale token (a pause or a rebuild took the lease meanwhile) changes nothing.
        """
        active = row is not None and row.status == policy.ACTIVE
        self.index.ack(claim, epoch(row.next_schedule_time) if active else None)


def _planned(claim: Claim) -> datetime:
    return datetime.fromtimestamp(claim.planned_at, timezone.utc)


def epoch(moment: datetime) -> int:
    """Whole epoch seconds of an aware datetime (the index's score)."""
    return int(moment.timestamp())


def make_dispatcher(config: Config) -> Dispatcher:
    """Build a Dispatcher with its own connections (call in the process that uses it)."""
    from me2_scheduler.timefmt import Display

    return Dispatcher(
        config,
        MysqlStore(config.mysql),
        DelayIndex(config.redis),
        ActionClient(config.action_rpc),
        display=Display(config.timezone).format,
    )


def main(config: Config, ctx: ChildContext) -> int:
    """Worker process: pop claims until told to stop; a dispatch in hand is finished first."""
    dispatcher = make_dispatcher(config)
    while not ctx.stopping:
        try:
            # Stale entries are dropped here; the lease is renewed once, by
            # ``run_claim`` right before Action (a claim may have waited in ``ready``).
            claim = dispatcher.index.pop_ready(timeout_s=1.0)
            if claim is not None:
                dispatcher.run_claim(claim)
        except (StoreError, RedisIndexError) as exc:
            # The lease brings the claim back; pause so a down server is not hammered.
            log.error("[TaskExecutor] dispatch interrupted: %s", exc)
            metrics.ERRORS.labels(role="worker", kind=type(exc).__name__).inc()
            ctx.wait(1.0)
    return 0
