"""One dispatch of an avatar (DESIGN §3.2), for the workers and for ``TriggerSchedule``.

The pick-up check first: read the rows and check they still want the claimed
slots (a slot already recorded as a success is not dispatched again: its row
moves on past it), and renew the claims' leases (a stale claim is dropped).
Then call Action with the slot's idempotency key, each call fenced by its
lease (``fence``), record the attempts in MySQL (what they write is
``policy.after_dispatch``'s), and settle the avatars in Redis where MySQL now
says. The times recorded come from the servers' clock (``attempts``). A
manual dispatch goes through the same ``Dispatcher``, so it is recorded
exactly as a worker records one.
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

from me2_scheduler import deadline, metrics
from me2_scheduler.attempts import ActionCaller
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clients.channels import Caller
from me2_scheduler.clock import ServerClock, from_epoch, utc_now
from me2_scheduler.config import Config
from me2_scheduler.errors import RedisIndexError
from me2_scheduler.fence import LeaseFence
from me2_scheduler.inflight import InFlight
from me2_scheduler.policy import Attempt, Success
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
# The server clock is sampled by every lease renewal; one not renewed for this
# long (``ServerClock.stale``) is read again from Redis TIME before use.
SERVER_CLOCK_MAX_AGE_S = 5.0


@dataclass(frozen=True)
class Dispatched:
    """What one dispatch did.

    ``result`` is success, failure, or skipped: no longer due, lease lost, or
    the slot already recorded. ``attempt`` is the Action call (None when
    skipped); ``row`` the schedule as recorded, or as read for a skip (None
    when the avatar has no schedule).
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
    batch, not per dispatch. ``clock`` is this host's wall clock, read only to
    warn when it is off the servers' (``ServerClock``); ``monotonic`` measures
    time locally.
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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._store = store
        self.index = index
        self._monotonic = monotonic
        self._server = ServerClock(monotonic, clock)
        policies = PolicyContext.from_config(config)
        self._caller = ActionCaller(
            config, action, policies, rng or random.Random(), self.server_now
        )
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
        fence = LeaseFence(self._confirm, self._config.schedule.lease_seconds, self._monotonic)
        picked, skipped = self._pick_up(claims, fence)
        policies = self._store.get_policies([row.avatar_id for row, _ in picked])  # one query
        called, lost = self._call_in_turn(picked, Trigger.AUTO, stopping, policies, fence)
        rows = {claim: row for row, claim in picked}
        metrics.DISPATCHES.labels(result=Outcome.SKIPPED).inc(len(lost))
        return skipped + [_skipped(c, rows[c]) for c in lost] + self._record_and_settle(called)

    def dispatch(
        self, row: ScheduleRow, claim: Claim, trigger: Trigger, caller: Caller | None = None
    ) -> Dispatched:
        """Call Action for ``row``'s avatar, record the attempt, settle Redis.

        For a ``caller`` (TriggerSchedule) the Action call has the caller's
        deadline and is cancelled when the caller goes away: a call cut so is
        recorded as a failure, never as a success. Raises StoreError or
        RedisIndexError when a server fails mid-way (the lease then expires).
        """
        return self.record(claim, self.attempt(row, claim, trigger, caller))

    def attempt(
        self, row: ScheduleRow, claim: Claim, trigger: Trigger, caller: Caller | None = None
    ) -> Attempt:
        """Call Action for ``row``'s avatar: the attempt to ``record``.

        What is read before the call (the avatar's policy, the server clock if
        stale) is read under the deadline in force (``deadline``), so a silent
        MySQL or Redis fails the caller in time, before Action is called.
        """
        chosen = self._store.get_policies([row.avatar_id]).get(row.avatar_id, DEFAULT)
        return self._caller.call(row, claim, trigger, chosen, caller)

    def record(self, claim: Claim, attempt: Attempt) -> Dispatched:
        """Record one attempt and settle it in Redis, under no deadline but the sockets'
        timeouts: a dispatch Action carried out is recorded even if its caller has left."""
        with deadline.lifted():
            (dispatched,) = self._record_and_settle([(claim, attempt)])
        return dispatched

    # -- the servers' clock ---------------------------------------------------

    def server_now(self) -> datetime:
        """The servers' time now (Redis TIME read by the last renewal, or read now), for
        every time this dispatcher records and every next time the API draws.

        When a stale sample cannot be renewed (Redis unreachable) the last one
        still tells the time; RedisIndexError only when there is none yet.
        """
        if self._server.stale(SERVER_CLOCK_MAX_AGE_S):
            try:
                self._server.sample(self.index.now())
            except RedisIndexError:
                if self._server.age_s() is None:
                    raise
        return self._server.now()

    def _confirm(self, claims: list[Claim]) -> list[bool]:
        """Renew the leases of ``claims`` in one script call (sampling the server clock)."""
        confirmed = self.index.confirm_leases(claims, self._config.schedule.lease_seconds)
        self._server.sample(confirmed.server_time)
        return confirmed.held

    # -- the pick-up check ----------------------------------------------------

    def _pick_up(
        self, claims: Sequence[Claim], fence: LeaseFence
    ) -> tuple[list[Picked], list[Dispatched]]:
        """The claims to call Action for, with their rows (their leases renewed right
        before Action and noted in ``fence``), and the skipped ones."""
        wanted, skipped = self._still_due(claims)
        sent = self._monotonic()
        held = self._confirm([claim for _, claim in wanted]) if wanted else []
        picked = [pair for pair, ok in zip(wanted, held, strict=True) if ok]
        # Gone meanwhile: a worker starved of CPU may have outlived its lease.
        skipped += [_skipped(c, row) for (row, c), ok in zip(wanted, held, strict=True) if not ok]
        fence.confirmed([claim for _, claim in picked], sent)
        metrics.DISPATCHES.labels(result=Outcome.SKIPPED).inc(len(skipped))
        return picked, skipped

    def _still_due(self, claims: Sequence[Claim]) -> tuple[list[Picked], list[Dispatched]]:
        """The claims whose rows still want their slots; the others, settled at once where
        MySQL says (not after the batch's calls). A slot already recorded as a success
        is one of the others: its row moves on past it first."""
        slots = [(claim.avatar_id, claim.idempotency_key) for claim in claims]
        rows, done = self._store.read_for_pickup(slots)  # one query
        wanted: list[Picked] = []
        redone: list[Picked] = []
        others: list[tuple[ScheduleRow | None, Claim]] = []
        for claim in claims:
            row = rows.get(claim.avatar_id)
            if row is None or not _wants_slot(row, claim):
                others.append((row, claim))
            elif claim.idempotency_key in done:
                redone.append((row, claim))
            else:
                wanted.append((row, claim))
        others += self._move_past_recorded(redone)
        if others:
            self.index.ack_many([(c, row.due_epoch if row else None) for row, c in others])
        return wanted, [_skipped(claim, row) for row, claim in others]

    def _move_past_recorded(self, redone: list[Picked]) -> list[tuple[ScheduleRow | None, Claim]]:
        """Move the rows of slots already recorded as a success on to a success's next
        time (MySQL first), without calling Action again; the rows as they now stand."""
        if not redone:
            return []
        policies = self._store.get_policies([row.avatar_id for row, _ in redone])
        moves = []
        for row, claim in redone:
            planned_at, avatar_id = from_epoch(claim.planned_at), row.avatar_id
            chosen = policies.get(avatar_id, DEFAULT)
            moves.append(
                (avatar_id, planned_at, self._caller.next_time(planned_at, chosen, avatar_id))
            )
            log.warning(
                "[TaskExecutor] slot %s was already recorded as a success; not dispatched again",
                claim.idempotency_key,
                extra={"avatar_id": avatar_id},
            )
        rows = self._store.move_past_recorded(moves)
        return [(rows.get(claim.avatar_id), claim) for _, claim in redone]

    # -- calling Action -------------------------------------------------------

    def _call_in_turn(
        self,
        picked: list[Picked],
        trigger: Trigger,
        stopping: Callable[[], bool],
        policies: Mapping[int, SchedulePolicy],
        fence: LeaseFence,
    ) -> tuple[list[Called], list[Claim]]:
        """Call Action for the claims, up to the in-flight limit at once; hand back the
        claims not yet called when told to stop or once the batch is late. Returns the
        calls made, and the claims the fence found lost (not called)."""
        lease_s = self._config.schedule.lease_seconds
        timeout_s = self._config.action_rpc.timeout_ms / 1000
        # Renew every lease of the batch before a call that could otherwise end
        # too close to their expiry to record: a lone dispatch has the lease
        # minus the Action timeout for that; a batch keeps at least half of it.
        renew_after_s = (lease_s - timeout_s) / 2
        began = renewed = self._monotonic()
        called: list[Called] = []
        lost: list[Claim] = []
        in_flight = self._in_flight
        pending = deque(picked)
        call = partial(self._call_action, trigger=trigger, policies=policies, fence=fence)
        while pending or in_flight.running:
            now = self._monotonic()
            started = bool(called or lost or in_flight.running)
            if pending and started and (stopping() or now - began > self._budget_s):
                handed_back = [claim for _, claim in pending]
                self.index.requeue(handed_back)
                fence.forget(handed_back)
                pending.clear()
            elif pending and started and now - renewed > renew_after_s:
                pending = self._renew_leases(called, pending, fence)
                renewed = now
            in_flight.start(pending, call)
            for claim, attempt in in_flight.finished():
                if attempt is None:
                    lost.append(claim)
                else:
                    called.append((claim, attempt))
        return called, lost

    def _renew_leases(
        self, called: list[Called], pending: deque[Picked], fence: LeaseFence
    ) -> deque[Picked]:
        """Restart the leases of the whole batch; the pending claims still held.

        A call in flight whose claim is gone goes on (it cannot be recalled);
        its record is guarded by the row's version, its ack by the lease token.
        """
        settled = [claim for claim, _ in called] + self._in_flight.tags()
        claims = settled + [claim for _, claim in pending]
        sent = self._monotonic()
        every = self._confirm(claims)
        fence.renewed(claims, every, sent)  # the pending ones, and calls not yet begun
        held = every[len(settled) :]
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
        fence: LeaseFence | None = None,
    ) -> Attempt | None:
        """Call Action for the claimed slot; the attempt to record, or None when ``fence``
        finds the claim's lease lost right before the call (Action is then not called).

        ``policies`` holds the avatar's scheduling policy (absent: the default).
        """
        if fence is not None and not fence.lets_through(claim):
            return None
        chosen = (policies or {}).get(row.avatar_id, DEFAULT)
        return self._caller.call(row, claim, trigger, chosen, caller)

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
