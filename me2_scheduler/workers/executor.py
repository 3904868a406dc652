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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from me2_scheduler import metrics, policy
from me2_scheduler.clients.action import ActionClient, ActionResult
from me2_scheduler.clients.channels import Caller
from me2_scheduler.config import Config
from me2_scheduler.errors import DownstreamError, RedisIndexError, StoreError
from me2_scheduler.storage.index import Claim, DelayIndex
from me2_scheduler.storage.mysql import Attempt, MysqlStore, Recorded, ScheduleRow
from me2_scheduler.supervisor.child import ChildContext

log = logging.getLogger("me2_scheduler.executor")

Clock = Callable[[], datetime]

# A batch hands its not-yet-called claims back to ``ready`` once it has run
# this long, so one slow Action call delays the rest of a batch by one call.
BATCH_BUDGET_S = 0.5


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


@dataclass
class _Call:
    """One Action call of a batch, waiting to be recorded."""

    claim: Claim
    attempt: Attempt
    result: ActionResult | None = None
    failure: DownstreamError | None = None


class Dispatcher:
    """Dispatches claimed avatars; shared by the workers and ``TriggerSchedule``.

    A worker hands over the claims it popped together (``run_batch``): their
    rows are read in one query, their leases renewed in one script call,
    Action is called for each in turn (at most one call in flight per worker,
    so ``MaxWorkers`` bounds the calls to Action as in the seed), then every
    outcome is recorded in one MySQL transaction and settled in Redis in one
    script call. The round trips are paid once per batch, not per dispatch.
    """

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
        budget_s: float = BATCH_BUDGET_S,
    ) -> None:
        self._config = config
        self._store = store
        self.index = index
        self._action = action
        self._clock = clock
        self._rng = rng or random.Random()
        self._display = display
        self._budget_s = budget_s

    def run_claim(self, claim: Claim) -> DispatchOutcome:
        """Dispatch one claim popped from ``ready`` (a batch of one)."""
        (outcome,) = self.run_batch([claim])
        return outcome

    def run_batch(
        self, claims: Sequence[Claim], *, stopping: Callable[[], bool] = lambda: False
    ) -> list[DispatchOutcome]:
        """Dispatch claims popped from ``ready``, skipping those MySQL says are no longer due.

        Returns one outcome per claim dispatched or skipped. Claims not yet
        called when ``stopping()`` turns true, or once the batch has run
        ``budget_s`` (a slow Action must not hold the rest back), go back to
        the head of ``ready`` for the next worker, with no outcome.

        Raises StoreError or RedisIndexError when a server fails mid-way; the
        leases then expire and the slots are dispatched again with the same keys.
        """
        live, skipped = self._pick_up(claims)
        calls = self._call_each(live, "auto", stopping)
        return skipped + self._record(calls)

    def _pick_up(
        self, claims: Sequence[Claim]
    ) -> tuple[list[tuple[ScheduleRow, Claim]], list[DispatchOutcome]]:
        """The pick-up check of a batch: the claims to dispatch, with their rows, and
        the outcomes of those skipped (already settled where MySQL says)."""
        rows = {row.avatar_id: row for row in self._store.batch_get([c.avatar_id for c in claims])}
        wanted: list[tuple[ScheduleRow, Claim]] = []
        skipped: list[DispatchOutcome] = []
        moved: list[tuple[Claim, int | None]] = []
        for claim in claims:
            row = rows.get(claim.avatar_id)
            if row is not None and self._wants_slot(row, claim):
                wanted.append((row, claim))
            else:
                moved.append((claim, _due(row)))
                skipped.append(DispatchOutcome(claim.avatar_id, "skipped", row=row))
        if moved:  # back where MySQL says now, not after the batch's calls
            self.index.ack_many(moved)
        # A claim may have waited in ``ready`` (or a worker starved of CPU may
        # have outlived its lease, and the slot be with another worker now):
        # renew the leases right before Action, and drop the claims that are gone.
        current = self.index.begin_many([c for _, c in wanted], self._config.schedule.lease_seconds)
        live = []
        for (row, claim), ok in zip(wanted, current, strict=True):
            if ok:
                live.append((row, claim))
            else:
                skipped.append(DispatchOutcome(claim.avatar_id, "skipped", row=row))
        metrics.DISPATCHES.labels(result="skipped").inc(len(skipped))
        return live, skipped

    @staticmethod
    def _wants_slot(row: ScheduleRow, claim: Claim) -> bool:
        """The pick-up check: active, and not already moved past the claimed slot."""
        return row.status == policy.ACTIVE and epoch(row.next_schedule_time) <= claim.planned_at

    def dispatch(
        self, row: ScheduleRow, claim: Claim, trigger: str, caller: Caller | None = None
    ) -> DispatchOutcome:
        """Call Action for ``row``'s avatar, record the outcome, settle Redis.

        For a ``caller`` (TriggerSchedule) the Action call has the caller's
        deadline and is cancelled when the caller goes away: a call cut so is
        recorded as a failure, never as a success. Raises StoreError or
        RedisIndexError when a server fails mid-way (the lease then expires).
        """
        (outcome,) = self._record([self._call(row, claim, trigger, caller)])
        return outcome

    def _call_each(
        self, live: list[tuple[ScheduleRow, Claim]], trigger: str, stopping: Callable[[], bool]
    ) -> list[_Call]:
        """Call Action for each claim in turn; hand back the rest when told to stop or late."""
        lease_s = self._config.schedule.lease_seconds
        timeout_s = self._config.action_rpc.timeout_ms / 1000
        # Renew every lease of the batch before a call that could otherwise end
        # too close to their expiry to record: a lone dispatch has the lease
        # minus the Action timeout for that; a batch keeps at least half of it.
        renew_after = (lease_s - timeout_s) / 2
        began = renewed = time.monotonic()
        calls: list[_Call] = []
        pending = list(live)
        while pending:
            now = time.monotonic()
            if calls and (stopping() or now - began > self._budget_s):
                self.index.requeue([claim for _, claim in pending])
                break
            if calls and now - renewed > renew_after:
                pending = self._renew(calls, pending, lease_s)
                renewed = now
                if not pending:
                    break
            row, claim = pending.pop(0)
            calls.append(self._call(row, claim, trigger))
        return calls

    def _renew(
        self, calls: list[_Call], pending: list[tuple[ScheduleRow, Claim]], lease_s: float
    ) -> list[tuple[ScheduleRow, Claim]]:
        """Restart the leases of the whole batch; the pending claims still held."""
        held = self.index.begin_many([c.claim for c in calls] + [c for _, c in pending], lease_s)
        kept = [pair for pair, ok in zip(pending, held[len(calls) :], strict=True) if ok]
        # Gone meanwhile (paused, or released while this worker stalled): not called.
        metrics.DISPATCHES.labels(result="skipped").inc(len(pending) - len(kept))
        return kept

    def _call(
        self, row: ScheduleRow, claim: Claim, trigger: str, caller: Caller | None = None
    ) -> _Call:
        avatar_id = row.avatar_id
        planned_at = _planned(claim)
        key = policy.idempotency_key(avatar_id, planned_at)
        started_at = self._clock()
        metrics.DISPATCH_LAG.observe(max(0.0, (started_at - planned_at).total_seconds()))
        log.info("[TaskExecutor] 开始调度分身: %d", avatar_id, extra={"avatar_id": avatar_id})
        began = time.perf_counter()
        try:
            result = self._ask_action(avatar_id, key, trigger, caller)
        except DownstreamError as exc:
            metrics.ACTION_DURATION.observe(time.perf_counter() - began)
            return _Call(
                claim, self._failure(row, planned_at, trigger, started_at, key, exc), failure=exc
            )
        metrics.ACTION_DURATION.observe(time.perf_counter() - began)
        attempt = self._success(row, planned_at, trigger, started_at, key, result)
        return _Call(claim, attempt, result=result)

    def _ask_action(
        self, avatar_id: int, key: str, trigger: str, caller: Caller | None
    ) -> ActionResult:
        """Action's answer; raise DownstreamError. A worker's call answers to no caller."""
        if caller is None:
            return self._action.schedule_action(avatar_id, key, trigger)
        return self._action.schedule_action(avatar_id, key, trigger, caller=caller)

    def _success(
        self,
        row: ScheduleRow,
        planned_at: datetime,
        trigger: str,
        started_at: datetime,
        key: str,
        result: ActionResult,
    ) -> Attempt:
        finished_at = self._clock()
        schedule = self._config.action_schedule
        next_time = policy.next_due(
            finished_at, schedule.min_interval_hours, schedule.max_interval_hours, self._rng
        )
        return Attempt(
            row.avatar_id, row.version, trigger, planned_at, started_at, finished_at, key,
            action_type=result.action_type, action_id=result.action_id, next_time=next_time,
        )  # fmt: skip

    def _failure(
        self,
        row: ScheduleRow,
        planned_at: datetime,
        trigger: str,
        started_at: datetime,
        key: str,
        exc: DownstreamError,
    ) -> Attempt:
        finished_at = self._clock()
        schedule = self._config.schedule
        return Attempt(
            row.avatar_id, row.version, trigger, planned_at, started_at, finished_at, key,
            error=str(exc), retry_time=policy.retry_due(finished_at, schedule.retry_delay_seconds),
            max_consecutive_failures=schedule.max_consecutive_failures,
        )  # fmt: skip

    def _record(self, calls: list[_Call]) -> list[DispatchOutcome]:
        """Record the calls in one transaction, then settle them in Redis in one script call.

        MySQL first: a crash in between is repaired by the pick-up check.
        """
        if not calls:
            return []
        recorded = self._store.record_many([call.attempt for call in calls])
        self.index.ack_many([(c.claim, _due(r.row)) for c, r in zip(calls, recorded, strict=True)])
        return [self._report(call, rec) for call, rec in zip(calls, recorded, strict=True)]

    def _report(self, call: _Call, recorded: Recorded) -> DispatchOutcome:
        """Count and log one recorded call, as the seed's log lines say."""
        avatar_id, row = call.claim.avatar_id, recorded.row
        extra = {"avatar_id": avatar_id}
        if recorded.duplicate:
            # Another worker recorded this slot first (this one outlived its lease).
            log.warning(
                "[TaskExecutor] slot %s was already recorded; not counted again",
                call.attempt.idempotency_key,
            )
            metrics.DISPATCHES.labels(result="skipped").inc()
            return DispatchOutcome(avatar_id, "skipped", row=row)
        if call.result is not None:
            metrics.DISPATCHES.labels(result="success").inc()
            log.info(
                "[TaskExecutor] 分身 %d 调度成功，行为类型: %s，下次调度: %s",
                avatar_id,
                call.result.action_type,
                self._display(row.next_schedule_time),
                extra=extra,
            )
            return DispatchOutcome(avatar_id, "success", action=call.result, row=row)
        error = call.attempt.error or ""
        metrics.DISPATCHES.labels(result="failure").inc()
        log.error("[TaskExecutor] 分身 %d 调度失败: %s", avatar_id, error, extra=extra)
        if recorded.auto_paused:
            log.error(
                "[TaskExecutor] 分身 %d 连续失败 %d 次，暂停调度",
                avatar_id,
                row.failed_count,
                extra=extra,
            )
        return DispatchOutcome(
            avatar_id,
            "failure",
            error=error,
            unavailable=call.failure is not None and call.failure.unavailable,
            auto_paused=recorded.auto_paused,
            row=row,
        )


def _due(row: ScheduleRow | None) -> int | None:
    """Where ``row`` puts its avatar in ``due``: its next time while active, else nowhere."""
    return (
        epoch(row.next_schedule_time) if row is not None and row.status == policy.ACTIVE else None
    )


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
    """Worker process: pop batches of claims until told to stop; a dispatch in hand is
    finished first, and the rest of its batch goes back to ``ready``."""
    dispatcher = make_dispatcher(config)
    batch = config.schedule.dispatch_batch
    while not ctx.stopping:
        try:
            claims = dispatcher.index.pop_ready_many(batch, timeout_s=1.0)
            if claims:
                dispatcher.run_batch(claims, stopping=lambda: ctx.stopping)
        except (StoreError, RedisIndexError) as exc:
            # The leases bring the claims back; pause so a down server is not hammered.
            log.error("[TaskExecutor] dispatch interrupted: %s", exc)
            metrics.ERRORS.labels(role="worker", kind=type(exc).__name__).inc()
            ctx.wait(1.0)
    return 0
