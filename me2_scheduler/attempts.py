"""Calling Action for one claimed slot, and the attempt it leaves to record.

Every time an attempt holds comes from the servers' clock (``server_now``,
Redis ``TIME`` as ``clock.ServerClock`` reads it), never from this host's: a
dispatch's start and lag, its end, and the next time, drawn from the later of
the server time and the planned time. So a host whose clock is skewed can
neither plan a next time in the past (and have the slot claimed again at once)
nor plan it late, and its history reads as any other host's.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from me2_scheduler import metrics, policy
from me2_scheduler.clients.action import ActionClient, ActionResult
from me2_scheduler.clients.channels import Caller
from me2_scheduler.clients.limiter import Signal, signal_for
from me2_scheduler.clock import from_epoch
from me2_scheduler.config import Config
from me2_scheduler.errors import DownstreamError
from me2_scheduler.policy import Attempt, Failure, Success
from me2_scheduler.policy_context import PolicyContext
from me2_scheduler.schedule_policy import SchedulePolicy
from me2_scheduler.states import Trigger
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.mysql import ScheduleRow

# The seed's log lines come from the dispatch logger, wherever the code sits.
log = logging.getLogger("me2_scheduler.dispatch")


@dataclass(frozen=True, eq=False)  # compared by identity, as before
class ActionCaller:
    """Calls Action for claimed slots and makes their attempts, timed by ``server_now``.

    ``policies`` fills in the blanks of an avatar's policy; ``rng`` draws its next times.
    """

    config: Config
    action: ActionClient
    policies: PolicyContext
    rng: random.Random
    server_now: Callable[[], datetime]

    def next_time(self, planned_at: datetime, chosen: SchedulePolicy, avatar_id: int) -> datetime:
        """A success's next time: drawn in ``chosen``'s active time from the later of the
        server time now and ``planned_at``."""
        base = max(self.server_now(), planned_at)
        return self.policies.next_due_or_default(base, chosen, self.rng, avatar_id)

    def call(
        self,
        row: ScheduleRow,
        claim: Claim,
        trigger: Trigger,
        chosen: SchedulePolicy,
        caller: Caller | None = None,
    ) -> Attempt:
        """Call Action for the claimed slot; the attempt to record, success or failure."""
        avatar_id = row.avatar_id
        planned_at = from_epoch(claim.planned_at)
        key = policy.idempotency_key(avatar_id, planned_at)
        started_at = self.server_now()
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
            return self.action.schedule_action(avatar_id, key, trigger)
        return self.action.schedule_action(avatar_id, key, trigger, caller=caller)

    def _success(self, result: ActionResult, chosen: SchedulePolicy, **common: Any) -> Success:
        """The success to record: the next time drawn in the active time of ``chosen``
        (the default policy draws exactly ``policy.next_due``)."""
        finished_at = self.server_now()
        next_time = self.next_time(common["planned_at"], chosen, common["avatar_id"])
        hour = self.policies.local_hour(common["started_at"], chosen)
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
        second from then on (so a retry, too, falls inside the avatar's windows). It
        carries a success's next time as well, for a slot recorded as a success already."""
        finished_at = self.server_now()
        schedule = self.config.schedule
        base = max(finished_at, common["planned_at"])
        retry_time = self.policies.retry_due(base, chosen, schedule.retry_delay_seconds)
        return Failure(
            **common,
            finished_at=finished_at,
            error=str(exc),
            retry_time=retry_time,
            max_consecutive_failures=schedule.max_consecutive_failures,
            next_time=self.next_time(common["planned_at"], chosen, common["avatar_id"]),
            unavailable=exc.unavailable,
            overloaded=signal_for(exc.code) is Signal.OVERLOAD,
        )
