"""The ``scheduler.Scheduler`` gRPC API (DESIGN §4).

Every call that depends on the avatar's state asks ``policy.decide``; this
module only carries the decision out. A change is written to MySQL first,
then mirrored in the Redis index before the call returns (DESIGN §2.3,
invariants 1 and 3). Application problems always travel in the response's
``code`` and ``message`` (0 ok, 400, 404, 409, 500, 503), never as a gRPC
status, so go-zero clients of the original service read them unchanged.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from me2_scheduler import policy
from me2_scheduler.config import Config
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.policy import (
    CONFLICT,
    INTERNAL,
    INVALID,
    NOT_FOUND,
    OK,
    Call,
)
from me2_scheduler.policy_context import PolicyContext
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.protos import scheduler_pb2_grpc
from me2_scheduler.rpc_server.answers import (
    SUCCESS,
    Refused,
    answers,
    io_budget_s,
    valid_avatar_id,
)
from me2_scheduler.rpc_server.convert import history_entry, schedule_info
from me2_scheduler.rpc_server.policies import (
    batch_problem,
    policy_reply,
    redraw_outside,
    requested_policy,
    shown_policy,
)
from me2_scheduler.rpc_server.trigger import Recorder, acted, caller_of
from me2_scheduler.schedule_policy import PolicyError, SchedulePolicy, summary
from me2_scheduler.states import Trigger
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore, ScheduleRow
from me2_scheduler.storage.policies import Redraw
from me2_scheduler.timefmt import Display

log = logging.getLogger("me2_scheduler.rpc")

MAX_BATCH_IDS = 1000
DEFAULT_HISTORY_LIMIT = 20
MAX_HISTORY_LIMIT = 100

CHANGED_CONCURRENTLY = "the schedule changed concurrently; retry"
IN_FLIGHT = "a dispatch is in progress for this avatar"


def history_limit(limit: int) -> int:
    """The page size asked for (0 = the default); raise ``Refused(400)`` outside 0..100."""
    if limit < 0 or limit > MAX_HISTORY_LIMIT:
        raise Refused(INVALID, f"limit must be between 0 and {MAX_HISTORY_LIMIT}")
    return limit or DEFAULT_HISTORY_LIMIT


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    """The Scheduler service over one store, one index and one dispatcher (all thread-safe).

    ``clock`` and ``rng`` draw the next times of enable, resume and a policy's
    re-draw, in the avatar's scheduling policy (``PolicyContext`` fills in its
    blanks). ``clock`` is by default the dispatcher's: the servers' time (Redis
    ``TIME``), as for a dispatch, so a host whose clock is off sets no next
    time in the past nor late.
    """

    def __init__(
        self,
        config: Config,
        store: MysqlStore,
        index: DelayIndex,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._index = index
        self._dispatcher = dispatcher
        self._clock = clock or dispatcher.server_now
        self._rng = rng or random.Random()
        self._display = Display(config.timezone)
        self._policies = PolicyContext.from_config(config)
        self._recorder = Recorder(dispatcher)

    def close(self) -> None:
        """Wait for the records of manual dispatches still being written (``Recorder``)."""
        self._recorder.close()

    def io_budget_s(self, context: grpc.ServicerContext) -> float | None:
        """How long this call's MySQL and Redis I/O may take (``answers.io_budget_s``)."""
        return io_budget_s(context.time_remaining(), self._config.timeout_ms)

    # -- the API ------------------------------------------------------------

    @answers(pb.EnableAvatarScheduleResponse)
    def EnableAvatarSchedule(self, request: Any) -> Any:
        return self._changed(Call.ENABLE, request, pb.EnableAvatarScheduleResponse)

    @answers(pb.PauseAvatarScheduleResponse)
    def PauseAvatarSchedule(self, request: Any) -> Any:
        self._change(Call.PAUSE, valid_avatar_id(request.avatar_id))
        return pb.PauseAvatarScheduleResponse(code=OK, message=SUCCESS)

    @answers(pb.ResumeAvatarScheduleResponse)
    def ResumeAvatarSchedule(self, request: Any) -> Any:
        return self._changed(Call.RESUME, request, pb.ResumeAvatarScheduleResponse)

    @answers(pb.DisableAvatarScheduleResponse)
    def DisableAvatarSchedule(self, request: Any) -> Any:
        return self._changed(Call.DISABLE, request, pb.DisableAvatarScheduleResponse)

    @answers(pb.GetAvatarScheduleStatusResponse)
    def GetAvatarScheduleStatus(self, request: Any) -> Any:
        row, _ = self._decided(Call.GET, valid_avatar_id(request.avatar_id))
        assert row is not None  # decide() answers 404 for a missing row
        return pb.GetAvatarScheduleStatusResponse(code=OK, message=SUCCESS, info=self._info(row))

    @answers(pb.TriggerScheduleResponse, with_context=True)
    def TriggerSchedule(self, request: Any, context: grpc.ServicerContext) -> Any:
        began = time.monotonic()
        avatar_id = valid_avatar_id(request.avatar_id)
        self._decided(Call.TRIGGER, avatar_id)  # refuse early, before touching Redis
        claim = self._index.claim_one(avatar_id, self._config.schedule.lease_seconds)
        if claim is None:
            raise Refused(CONFLICT, IN_FLIGHT)
        row = self._still_dispatchable(claim)
        caller = caller_of(
            context, began, self._config.timeout_ms, self._config.action_rpc.timeout_ms
        )
        attempt = self._dispatcher.attempt(row, claim, Trigger.MANUAL, caller=caller)
        success = acted(self._recorder.recorded(claim, attempt))
        return pb.TriggerScheduleResponse(
            code=OK,
            message=SUCCESS,
            action_type=success.action_type,
            action_id=success.action_id,
        )

    @answers(pb.BatchGetScheduleStatusResponse)
    def BatchGetScheduleStatus(self, request: Any) -> Any:
        avatar_ids = list(request.avatar_ids)
        if len(avatar_ids) > MAX_BATCH_IDS:
            raise Refused(INVALID, f"at most {MAX_BATCH_IDS} avatar_ids per call")
        if any(avatar_id <= 0 for avatar_id in avatar_ids):
            raise Refused(INVALID, "every avatar_id must be a positive integer")
        rows = self._store.batch_get(avatar_ids)
        # The policies of the whole batch in one query, not one per avatar.
        policies = self._store.get_policies([row.avatar_id for row in rows])
        infos = [self._info(row, policies[row.avatar_id]) for row in rows]
        return pb.BatchGetScheduleStatusResponse(code=OK, message=SUCCESS, schedules=infos)

    @answers(pb.GetAvatarScheduleHistoryResponse)
    def GetAvatarScheduleHistory(self, request: Any) -> Any:
        avatar_id = valid_avatar_id(request.avatar_id)
        limit = history_limit(request.limit)
        if request.cursor < 0:
            raise Refused(INVALID, "cursor must not be negative")
        entries = self._store.history(avatar_id, limit, before_id=request.cursor)
        if not entries:  # history rows exist only for avatars with a schedule
            self._decided(Call.GET, avatar_id)
        next_cursor = entries[-1].id if len(entries) == limit else 0
        return pb.GetAvatarScheduleHistoryResponse(
            code=OK,
            message=SUCCESS,
            next_cursor=next_cursor,
            entries=[history_entry(entry, self._display) for entry in entries],
        )

    # -- scheduling policies ----------------------------------------------------

    @answers(pb.SetAvatarSchedulePolicyResponse)
    def SetAvatarSchedulePolicy(self, request: Any) -> Any:
        avatar_id = valid_avatar_id(request.avatar_id)
        chosen = self._requested_policy(request)
        done = self._store.set_policy(avatar_id, chosen, self._redraw(chosen))
        if done is None:
            raise Refused(NOT_FOUND, policy.decide(Call.GET, None).message)
        if done.redrawn:
            self._mirror(done.row)
        return pb.SetAvatarSchedulePolicyResponse(
            code=OK,
            message=SUCCESS,
            policy=shown_policy(chosen),
            info=self._info(done.row, chosen),
            redrawn=done.redrawn,
        )

    @answers(pb.GetAvatarSchedulePolicyResponse)
    def GetAvatarSchedulePolicy(self, request: Any) -> Any:
        avatar_id = valid_avatar_id(request.avatar_id)
        self._decided(Call.GET, avatar_id)  # 404 without a schedule
        chosen = self._store.get_policy(avatar_id)
        return pb.GetAvatarSchedulePolicyResponse(
            code=OK, message=SUCCESS, **policy_reply(chosen, self._policies)
        )

    @answers(pb.SetSchedulePoliciesResponse)
    def SetSchedulePolicies(self, request: Any) -> Any:
        avatar_ids = list(dict.fromkeys(request.avatar_ids))
        problem = batch_problem(avatar_ids, MAX_BATCH_IDS)
        if problem is not None:
            raise Refused(INVALID, problem)
        chosen = self._requested_policy(request)
        done = self._store.set_policies(avatar_ids, chosen, self._redraw(chosen))
        redrawn = [entry.row for entry in done.values() if entry.redrawn]
        if redrawn:  # MySQL first, then Redis; one script call for the batch
            due = [(row.avatar_id, at) for row in redrawn if (at := row.due_epoch) is not None]
            self._index.put_due_many(due)
        return pb.SetSchedulePoliciesResponse(
            code=OK,
            message=SUCCESS,
            updated=len(done),
            redrawn=len(redrawn),
            missing_avatar_ids=[avatar_id for avatar_id in avatar_ids if avatar_id not in done],
        )

    def _requested_policy(self, request: Any) -> SchedulePolicy:
        """The request's policy; raise ``Refused(400)`` naming every bad field."""
        try:
            return requested_policy(request, self._policies)
        except PolicyError as exc:
            raise Refused(INVALID, str(exc)) from None

    def _redraw(self, chosen: SchedulePolicy) -> Redraw:
        return redraw_outside(chosen, self._policies, self._clock(), self._rng)

    # -- state changes --------------------------------------------------------

    def _decided(self, call: Call, avatar_id: int) -> tuple[ScheduleRow | None, policy.Decision]:
        """Read the row and decide; raise ``Refused`` unless the decision is OK."""
        row = self._store.get(avatar_id)
        decision = policy.decide(call, row.status if row else None)
        if decision.code != OK:
            raise Refused(decision.code, decision.message)
        return row, decision

    def _changed(self, call: Call, request: Any, response_type: type) -> Any:
        """``call`` carried out on the request's avatar (``_change``), answered OK with the
        schedule it left."""
        row = self._change(call, valid_avatar_id(request.avatar_id))
        return response_type(code=OK, message=SUCCESS, info=self._info(row))

    def _change(self, call: Call, avatar_id: int) -> ScheduleRow:
        """Carry out ``call``'s decision in MySQL, then mirror the row in Redis.

        A guarded write that loses a race is re-read and re-decided once, then
        refused with 409. Raises ``Refused``, ``StoreError``, ``RedisIndexError``.
        """
        for _ in range(2):
            row, decision = self._decided(call, avatar_id)
            changed = row if not decision.changes_row else self._write(avatar_id, row, decision)
            if changed is not None:
                # Also for an unchanged row: the index converges to MySQL.
                self._mirror(changed, takeover=decision.reschedule)
                return changed
        raise Refused(CONFLICT, CHANGED_CONCURRENTLY)

    def _write(
        self, avatar_id: int, row: ScheduleRow | None, decision: policy.Decision
    ) -> ScheduleRow | None:
        """Apply ``decision`` to MySQL; None when a concurrent writer won."""
        if row is None:  # decide() allows only a create on a missing row
            return self._store.create(avatar_id, self._next_time(avatar_id))
        next_time = self._next_time(avatar_id) if decision.reschedule else None
        return self._store.transition(
            avatar_id,
            expected_status=row.status,
            expected_version=row.version,
            new_status=decision.new_status or row.status,
            next_time=next_time,
            reset_failures=decision.reschedule,
            pause_reason=decision.pause_reason,
        )

    def _mirror(self, row: ScheduleRow, *, takeover: bool = False) -> None:
        """Put the avatar where MySQL says: in due at its next time, or nowhere.

        An active avatar in flight is left to its dispatcher, which settles it
        from MySQL when it acks. A reactivation (``takeover``) instead ends any
        lease first: the dispatch in flight is then a manual one of a paused or
        disabled avatar, whose ack would otherwise drop the newly active avatar
        from the index; with its lease gone that ack changes nothing.
        """
        if takeover:
            self._index.remove(row.avatar_id)
        due = row.due_epoch
        if due is not None:
            self._index.put_due(row.avatar_id, due)
        else:
            self._index.remove(row.avatar_id)

    def _still_dispatchable(self, claim: Claim) -> ScheduleRow:
        """Re-read the row under the claim; if it may no longer be triggered, release it.

        Raises ``Refused`` (after ending the claim where MySQL says) then.
        """
        row = self._store.get(claim.avatar_id)
        decision = policy.decide(Call.TRIGGER, row.status if row else None)
        if row is not None and decision.dispatch:
            return row
        self._index.ack(claim, row.due_epoch if row else None)
        if decision.code == OK:  # a table without a dispatch here is a bug, not a race
            raise Refused(INTERNAL, "internal error")
        raise Refused(decision.code, decision.message)

    def _next_time(self, avatar_id: int) -> datetime:
        """A new next time for the avatar from now, in its policy's active time."""
        chosen = self._store.get_policy(avatar_id)
        return self._policies.next_due_or_default(self._clock(), chosen, self._rng, avatar_id)

    def _info(self, row: ScheduleRow, chosen: SchedulePolicy | None = None) -> pb.ScheduleInfo:
        """The row's ``ScheduleInfo``; its policy is read unless given."""
        if chosen is None:
            chosen = self._store.get_policy(row.avatar_id)
        return schedule_info(row, self._display, summary(chosen))
