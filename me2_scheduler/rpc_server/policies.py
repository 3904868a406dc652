"""The scheduling-policy calls' rules, apart from the servicer's plumbing.

What a Set request's policy is (every bad field named, one sentence each,
for a 400), which schedules a new policy re-draws (an active one whose next
time falls outside the new active time), and the policy as a reply shows it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from me2_scheduler.policy_context import PolicyContext
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.rpc_server.convert import policy_document, policy_message
from me2_scheduler.schedule_policy import (
    DEFAULT,
    PolicyError,
    SchedulePolicy,
    parse_policy,
    policy_to_dict,
    summary,
    validate_policy,
)
from me2_scheduler.states import Status
from me2_scheduler.storage.policies import Redraw
from me2_scheduler.storage.rows import ScheduleRow


def requested_policy(request: Any, context: PolicyContext) -> SchedulePolicy:
    """The policy a Set request carries, read and checked against the service's defaults.

    Raises PolicyError naming every bad field (a missing policy included).
    """
    if not request.HasField("policy"):
        raise PolicyError("policy", "is required; an empty policy is the service default")
    chosen = parse_policy(policy_document(request.policy))
    validate_policy(
        chosen,
        context.zone_name,
        default_min_h=context.min_interval_hours,
        default_max_h=context.max_interval_hours,
    )
    return chosen


def batch_problem(avatar_ids: Sequence[int], limit: int) -> str | None:
    """Why a list of avatar ids cannot be taken in one call (None: it can)."""
    if not avatar_ids:
        return "give at least one avatar_id"
    if len(avatar_ids) > limit:
        return f"at most {limit} avatar_ids per call"
    if any(avatar_id <= 0 for avatar_id in avatar_ids):
        return "every avatar_id must be a positive integer"
    return None


def redraw_outside(
    chosen: SchedulePolicy, context: PolicyContext, now: datetime, rng: random.Random
) -> Redraw:
    """What setting ``chosen`` re-draws: the next time of an active schedule that falls
    outside its active time, drawn afresh from ``now``.

    A paused or disabled schedule keeps its time: a resume or an enable draws
    one, with the policy then in force.
    """

    def redraw(row: ScheduleRow) -> datetime | None:
        if row.status != Status.ACTIVE or context.inside(row.next_schedule_time, chosen):
            return None
        return context.next_due(now, chosen, rng)

    return redraw


def shown_policy(chosen: SchedulePolicy) -> pb.SchedulePolicy:
    """The ``SchedulePolicy`` message of a policy, in its stored (normal) form."""
    return policy_message(policy_to_dict(chosen))


def policy_reply(chosen: SchedulePolicy, context: PolicyContext) -> dict[str, Any]:
    """The fields of a ``GetAvatarSchedulePolicyResponse`` past code and message."""
    low, high = context.bounds(chosen)
    return {
        "policy": shown_policy(chosen),
        "summary": summary(chosen),
        "is_default": chosen == DEFAULT,
        "effective_time_zone": context.zone_of(chosen).key,
        "effective_min_interval_hours": low,
        "effective_max_interval_hours": high,
    }
