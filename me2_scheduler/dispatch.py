"""One dispatch of an avatar (DESIGN §3.2), for the workers and for ``TriggerSchedule``.

The pick-up check first: read the row and check it still wants the claimed
slot, and renew the claim's lease (a stale claim is dropped). Then call
Action with the slot's idempotency key, record the attempt in MySQL (what it
writes is ``policy.after_dispatch``'s), and settle the avatar in Redis where
MySQL now says. A success's next time is drawn in the active time of the
avatar's scheduling policy (read for the whole batch in one query); a
failure's retry is ``RetryDelaySeconds`` later whatever the policy's windows
say, so a failing Action is not hammered at a window's opening. A manual
dispatch goes through the same ``Dispatcher``, so it is recorded exactly as
a worker records one.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from me2_scheduler import metrics, policy
from me2_scheduler.clients.action import ActionClient, ActionResult
from me2_scheduler.clients.channels import Caller
from me2_scheduler.clients.limiter import Signal, signal_for
from me2_scheduler.clock import from_epoch, utc_now
from me2_scheduler.config import Config
from me2_scheduler.errors import DownstreamError
from me2_scheduler.inflight import InFlight
from me2_scheduler.policy import Attempt, Failure, Success
from me2_scheduler.policy_context import PolicyContext
from me2_scheduler.schedule_policy import DEFAULT, SchedulePolicy
from me2_scheduler.states import Outcome, Trigger
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore, Recorded, ScheduleRow

log = logging.getLogger("me2_scheduler.dispatch")

Clock = Callable[[], datetime]
Picked = tuple[ScheduleRow, Claim]  # a claim that passed the pick-up check, with its row
Called = tuple[Claim, Attempt]  # a claim whose Action call is done, with the attempt

# A batch hands its not-yet-called claims back to ``ready`` once it has run
# this long, so one slow Action call delays the rest of a batch by one call.
BATCH_BUDGET_S = 0.5


@dataclass(frozen=True)
class Dispatched:
    """What one dispatch did.

    ``result`` is success, failure, or skipped: no longer due, lease lost, or
    the slot already recorded by another worker. ``attempt`` is the Action
    call (None when skipped); ``row`` the schedule as recorded, or as read
    for a skip (None when the avatar has no schedule).
    """

    avatar_id: int
    result: Outcome
    row: ScheduleRow | None = None
    attempt: Attempt | None = None
    auto_paused: bool = False


def _skipped(claim: Claim, row: ScheduleRow | None) -> Dispatched:
    return Dispatched(claim.avatar_id, Outcome.SKIPPED, row)


class Dispatcher:
    """Dispatches claimed avatars; shared by the workers and ``TriggerSchedule``.

    A worker hands over the claims it popped together (``dispatch_batch``):
    their rows are read in one query, their leases renewed in one script call,
    Action is called for them with up to ``max_in_flight`` calls at once (the
    worker's share of ``Schedule.MaxInFlight``; one, the seed's semaphore, by
    default), then every attempt is recorded in one MySQL transaction and
    settled in Redis in one script call. The round trips are paid once per
    batch, not per dispatch.
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
        max_in_flight: int = 1,
    ) -> None:
        self._config = config
        self._store = store
        self.index = index
        self._action = action
        self._clock = clock
        self._rng = rng or random.Random()
        self._policies = PolicyContext.from_config(config)
        self._display = display
        self._budget_s = budget_s
        self._max_in_flight = max_in_flight
        self._in_flight_now: InFlight[Claim] | None = None

    @property
    def _in_flight(self) -> InFlight[Claim]:
        # Made on a worker's first batch: a TriggerSchedule dispatcher (the
        # rpc_server's) never holds calls in flight, nor reports a limit.
        if self._in_flight_now is None:
            self._in_flight_now = InFlight(self._max_in_flight)
        return self._in_flight_now

    def pop_size(self, dispatch_batch: int) -> int:
        """How many claims a worker should pop next (``InFlight.pop_size``)."""
        return self._in_flight.pop_size(dispatch_batch)

    def dispatch_batch(
        self, claims: Sequence[Claim], *, stopping: Callable[[], bool] = lambda: False
    ) -> list[Dispatched]:
        """Dispatch claims popped from ``ready``, skipping those MySQL says are no longer due.

        Returns one ``Dispatched`` per claim dispatched or skipped. Claims not
        yet called when ``stopping()`` turns true, or once the batch has run
        ``budget_s`` (a slow Action must not hold the rest back), go back to
        the head of ``ready`` for the next worker, with none.

        Raises StoreError or RedisIndexError when a server fails mid-way; the
        leases then expire and the slots are dispatched again with the same keys.
        """
        picked, skipped = self._pick_up(claims)
        policies = self._store.get_policies([row.avatar_id for row, _ in picked])  # one query
        called = self._call_in_turn(picked, Trigger.AUTO, stopping, policies)
        return skipped + self._record_and_settle(called)

    def dispatch(
        self, row: ScheduleRow, claim: Claim, trigger: Trigger, caller: Caller | None = None
    ) -> Dispatched:
        """Call Action for ``row``'s avatar, record the attempt, settle Redis.

        For a ``caller`` (TriggerSchedule) the Action call has the caller's
        deadline and is cancelled when the caller goes away: a call cut so is
        recorded as a failure, never as a success. Raises StoreError or
        RedisIndexError when a server fails mid-way (the lease then expires).
        """
        policies = self._store.get_policies([row.avatar_id])
        attempt = self._call_action(row, claim, trigger, caller, policies)
        (dispatched,) = self._record_and_settle([(claim, attempt)])
        return dispatched

    # -- the pick-up check ----------------------------------------------------

    def _pick_up(self, claims: Sequence[Claim]) -> tuple[list[Picked], list[Dispatched]]:
        """The claims to call Action for, with their rows, and the skipped ones."""
        wanted, skipped = self._still_due(claims)
        picked, lost = self._still_held(wanted)
        skipped += lost
        metrics.DISPATCHES.labels(result=Outcome.SKIPPED).inc(len(skipped))
        return picked, skipped

    def _still_due(self, claims: Sequence[Claim]) -> tuple[list[Picked], list[Dispatched]]:
        """The claims whose rows still want their slots; the others, settled at once where
        MySQL says (not after the batch's calls)."""
        rows = {row.avatar_id: row for row in self._store.batch_get([c.avatar_id for c in claims])}
        wanted: list[Picked] = []
        skipped: list[Dispatched] = []
        settle_now: list[tuple[Claim, int | None]] = []
        for claim in claims:
            row = rows.get(claim.avatar_id)
            if row is not None and _wants_slot(row, claim):
                wanted.append((row, claim))
            else:
                settle_now.append((claim, row.due_epoch if row else None))
                skipped.append(_skipped(claim, row))
        if settle_now:
            self.index.ack_many(settle_now)
        return wanted, skipped

    def _still_held(self, wanted: list[Picked]) -> tuple[list[Picked], list[Dispatched]]:
        """Renew the leases right before Action; the claims still held, and those gone.

        A claim may have waited in ``ready``, or a worker starved of CPU may
        have outlived its lease and the slot be with another worker now.
        """
        lease_s = self._config.schedule.lease_seconds
        held = self.index.renew_leases([claim for _, claim in wanted], lease_s)
        picked: list[Picked] = []
        lost: list[Dispatched] = []
        for (row, claim), ok in zip(wanted, held, strict=True):
            if ok:
                picked.append((row, claim))
            else:
                lost.append(_skipped(claim, row))
        return picked, lost

    # -- calling Action -------------------------------------------------------

    def _call_in_turn(
        self,
        picked: list[Picked],
        trigger: Trigger,
        stopping: Callable[[], bool],
        policies: Mapping[int, SchedulePolicy],
    ) -> list[Called]:
        """Call Action for the claims, up to the in-flight limit at once; hand back the
        claims not yet called when told to stop or once the batch is late."""
        lease_s = self._config.schedule.lease_seconds
        timeout_s = self._config.action_rpc.timeout_ms / 1000
        # Renew every lease of the batch before a call that could otherwise end
        # too close to their expiry to record: a lone dispatch has the lease
        # minus the Action timeout for that; a batch keeps at least half of it.
        renew_after_s = (lease_s - timeout_s) / 2
        began = renewed = time.monotonic()
        called: list[Called] = []
        in_flight = self._in_flight
        pending = deque(picked)
        call = partial(self._call_action, trigger=trigger, policies=policies)
        while pending or in_flight.running:
            now = time.monotonic()
            started = bool(called or in_flight.running)
            if pending and started and (stopping() or now - began > self._budget_s):
                self.index.requeue([claim for _, claim in pending])
                pending.clear()
            elif pending and started and now - renewed > renew_after_s:
                pending = self._renew_leases(called, pending, lease_s)
                renewed = now
            in_flight.start(pending, call)
            called += in_flight.finished()
        return called

    def _renew_leases(
        self,
        called: list[Called],
        pending: deque[Picked],
        lease_s: float,
    ) -> deque[Picked]:
        """Restart the leases of the whole batch; the pending claims still held.

        A call in flight whose claim is gone goes on (it cannot be recalled);
        its record is guarded by the row's version, its ack by the lease token.
        """
        settled = [claim for claim, _ in called] + self._in_flight.tags()
        claims = settled + [claim for _, claim in pending]
        held = self.index.renew_leases(claims, lease_s)[len(settled) :]
        kept = deque(pair for pair, ok in zip(pending, held, strict=True) if ok)
        # Gone meanwhile (paused, or released while this worker stalled): not called.
        metrics.DISPATCHES.labels(result=Outcome.SKIPPED).inc(len(pending) - len(kept))
        return kept

    def _call_action(
        self,
        row: ScheduleRow,
        claim: Claim,
        trigger: Trigger,
        caller: Caller | None = None,
        policies: Mapping[int, SchedulePolicy] | None = None,
    ) -> Attempt:
        """Call Action for the claimed slot; the attempt to record, success or failure.

        ``policies`` holds the avatar's scheduling policy (absent: the default).
        """
        avatar_id = row.avatar_id
        planned_at = from_epoch(claim.planned_at)
        key = policy.idempotency_key(avatar_id, planned_at)
        started_at = self._clock()
        metrics.DISPATCH_LAG.observe(max(0.0, (started_at - planned_at).total_seconds()))
        log.info("[TaskExecutor] 开始调度分身: %d", avatar_id, extra={"avatar_id": avatar_id})
        common: dict[str, Any] = {
            "avatar_id": avatar_id,
            "expected_version": row.version,
            "trigger": trigger,
            "planned_at": planned_at,
            "started_at": started_at,
            "idempotency_key": key,
        }
        chosen = (policies or {}).get(avatar_id, DEFAULT)
        began = time.perf_counter()
        try:
            result = self._schedule_action(avatar_id, key, trigger, caller)
        except DownstreamError as exc:
            metrics.ACTION_DURATION.observe(time.perf_counter() - began)
            return self._failure(exc, chosen, **common)
        metrics.ACTION_DURATION.observe(time.perf_counter() - began)
        return self._success(result, chosen, **common)

    def _schedule_action(
        self, avatar_id: int, key: str, trigger: Trigger, caller: Caller | None
    ) -> ActionResult:
        """Action's answer; raise DownstreamError. A worker's call answers to no caller."""
        if caller is None:
            return self._action.schedule_action(avatar_id, key, trigger)
        return self._action.schedule_action(avatar_id, key, trigger, caller=caller)

    def _success(self, result: ActionResult, chosen: SchedulePolicy, **common: Any) -> Success:
        """The success to record: the next time drawn in the active time of ``chosen``
        (the default policy draws exactly ``policy.next_due``)."""
        finished_at = self._clock()
        avatar_id = common["avatar_id"]
        next_time = self._policies.next_due_or_default(finished_at, chosen, self._rng, avatar_id)
        hour = self._policies.local_hour(common["started_at"], chosen)
        metrics.DISPATCH_LOCAL_HOUR.labels(hour=str(hour)).inc()
        return Success(
            **common,
            finished_at=finished_at,
            action_type=result.action_type,
            action_id=result.action_id,
            next_time=next_time,
        )

    def _failure(self, exc: DownstreamError, chosen: SchedulePolicy, **common: Any) -> Failure:
        """The failure to record: retried ``RetryDelaySeconds`` later, at the first active
        second from then on (so a retry, too, falls inside the avatar's windows)."""
        finished_at = self._clock()
        schedule = self._config.schedule
        retry_time = self._policies.retry_due(finished_at, chosen, schedule.retry_delay_seconds)
        return Failure(
            **common,
            finished_at=finished_at,
            error=str(exc),
            retry_time=retry_time,
            max_consecutive_failures=schedule.max_consecutive_failures,
            unavailable=exc.unavailable,
            overloaded=signal_for(exc.code) is Signal.OVERLOAD,
        )

    # -- recording ------------------------------------------------------------

    def _record_and_settle(self, called: list[Called]) -> list[Dispatched]:
        """Record the attempts in one transaction, then settle them in Redis in one script call.

        MySQL first: a crash in between is repaired by the pick-up check.
        """
        if not called:
            return []
        recorded = self._store.record_many([attempt for _, attempt in called])
        pairs = list(zip(called, recorded, strict=True))
        self.index.ack_many([(claim, rec.row.due_epoch) for (claim, _), rec in pairs])
        return [self._report(claim, attempt, rec) for (claim, attempt), rec in pairs]

    def _report(self, claim: Claim, attempt: Attempt, recorded: Recorded) -> Dispatched:
        """Count and log one recorded attempt, as the seed's log lines say."""
        avatar_id, row = claim.avatar_id, recorded.row
        if recorded.duplicate:
            # Another worker recorded this slot first (this one outlived its lease).
            log.warning(
                "[TaskExecutor] slot %s was already recorded; not counted again",
                attempt.idempotency_key,
            )
            metrics.DISPATCHES.labels(result=Outcome.SKIPPED).inc()
            return _skipped(claim, row)
        extra = {"avatar_id": avatar_id}
        if isinstance(attempt, Success):
            metrics.DISPATCHES.labels(result=Outcome.SUCCESS).inc()
            log.info(
                "[TaskExecutor] 分身 %d 调度成功，行为类型: %s，下次调度: %s",
                avatar_id,
                attempt.action_type,
                self._display(row.next_schedule_time),
                extra=extra,
            )
            return Dispatched(avatar_id, Outcome.SUCCESS, row, attempt)
        metrics.DISPATCHES.labels(result=Outcome.FAILURE).inc()
        log.error("[TaskExecutor] 分身 %d 调度失败: %s", avatar_id, attempt.error, extra=extra)
        if recorded.auto_paused:
            log.error(
                "[TaskExecutor] 分身 %d 连续失败 %d 次，暂停调度",
                avatar_id,
                row.failed_count,
                extra=extra,
            )
        return Dispatched(avatar_id, Outcome.FAILURE, row, attempt, recorded.auto_paused)


def _wants_slot(row: ScheduleRow, claim: Claim) -> bool:
    """The pick-up check: active, and not already moved past the claimed slot."""
    due = row.due_epoch
    return due is not None and due <= claim.planned_at


def make_dispatcher(config: Config, max_in_flight: int = 1) -> Dispatcher:
    """Build a Dispatcher with its own connections (call in the process that uses it)."""
    from me2_scheduler.timefmt import Display

    return Dispatcher(
        config,
        MysqlStore(config.mysql),
        DelayIndex(config.redis),
        ActionClient(config.action_rpc),
        display=Display(config.timezone).format,
        max_in_flight=max_in_flight,
    )
