"""The Diary service client: ``diary.Diary/GenerateAvatarDiary``."""

from __future__ import annotations

from typing import Any

import grpc

from me2_scheduler.clients.channels import RpcClient
from me2_scheduler.errors import DownstreamError
from me2_scheduler.protos import diary_pb2, diary_pb2_grpc


class DiaryClient(RpcClient):
    """Asks Diary to write an avatar's diary for a date."""

    service = "Diary"

    def _make_stub(self, channel: grpc.Channel) -> Any:
        return diary_pb2_grpc.DiaryStub(channel)

    def generate(self, avatar_id: int, date: str, timeout_s: float | None = None) -> int:
        """Generate the diary of ``avatar_id`` for ``date`` (YYYY-MM-DD); return its diary_id.

        The deadline is ``timeout_s`` when given, else ``DiaryRpc.Timeout``.
        Raises ``DownstreamError`` (``unavailable=False``) when Diary answers a
        non-zero code, with Diary's message; ``DownstreamError`` with
        ``unavailable=True`` when Diary is unreachable or misses the deadline;
        ``SchedulerError`` when the endpoints cannot be resolved.
        """
        request = diary_pb2.GenerateAvatarDiaryRequest(avatar_id=avatar_id, date=date)
        response = self.call("GenerateAvatarDiary", request, timeout_s)
        if response.code != 0:
            raise DownstreamError(response.message or f"Diary answered code {response.code}")
        return response.diary_id
