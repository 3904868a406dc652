"""The Action service client: ``action.Action/ScheduleAction``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from me2_scheduler.clients.channels import Caller, RpcClient
from me2_scheduler.errors import DownstreamError
from me2_scheduler.protos import action_pb2, action_pb2_grpc


@dataclass(frozen=True)
class ActionResult:
    """What Action did for the avatar."""

    action_type: str
    action_id: int


class ActionClient(RpcClient):
    """Asks Action to act for an avatar within ``ActionRpc.Timeout`` or a sooner caller deadline."""

    service = "Action"

    def _make_stub(self, channel: grpc.Channel) -> Any:
        return action_pb2_grpc.ActionStub(channel)

    def schedule_action(
        self, avatar_id: int, idempotency_key: str, trigger: str, *, caller: Caller | None = None
    ) -> ActionResult:
        """Dispatch one action; ``trigger`` is ``auto`` or ``manual``.

        Made for an incoming ``caller`` (TriggerSchedule), the call has the
        caller's timeout and is cancelled when the caller goes away;
        otherwise it has ``ActionRpc.Timeout``. Raises ``DownstreamError``
        (``unavailable=False``) when Action answers a non-zero code, with
        Action's message; ``DownstreamError`` with ``unavailable=True`` when
        Action is unreachable, misses the deadline or the call is cancelled;
        ``SchedulerError`` when the endpoints cannot be resolved.
        """
        request = action_pb2.ScheduleActionRequest(
            avatar_id=avatar_id, idempotency_key=idempotency_key, trigger=trigger
        )
        response = self.call("ScheduleAction", request, None, caller)
        if response.code != 0:
            raise DownstreamError(response.message or f"Action answered code {response.code}")
        return ActionResult(action_type=response.action_type, action_id=response.action_id)
