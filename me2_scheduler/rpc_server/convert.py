"""Store rows as wire messages: ``ScheduleRow`` → ``ScheduleInfo``, ``HistoryEntry`` → entry;
and a scheduling policy's JSON form both ways to its ``SchedulePolicy`` message.

Times become ``YYYY-MM-DD HH:MM:SS`` in the service zone (``Display``), ""
for a NULL column; NULL strings and numbers become "" and 0, as proto3 has
no null.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict

from me2_scheduler.protos import scheduler_pb2
from me2_scheduler.storage.rows import HistoryEntry, ScheduleRow
from me2_scheduler.timefmt import Display

_INT32_MAX = 2**31 - 1


def _int32(value: int) -> int:
    """Clamp a counter to the int32 the seed's ScheduleInfo declares (never raise on the wire)."""
    return max(-_INT32_MAX - 1, min(_INT32_MAX, value))


def schedule_info(
    row: ScheduleRow, display: Display, policy: str = ""
) -> scheduler_pb2.ScheduleInfo:
    """The ``ScheduleInfo`` of one schedule row; ``policy`` is its policy's summary."""
    return scheduler_pb2.ScheduleInfo(
        avatar_id=row.avatar_id,
        status=row.status or "",
        next_schedule_time=display.format(row.next_schedule_time),
        last_schedule_time=display.format(row.last_schedule_time),
        last_action_type=row.last_action_type or "",
        schedule_count=_int32(row.schedule_count),
        failed_count=_int32(row.failed_count),
        created_at=display.format(row.created_at),
        updated_at=display.format(row.updated_at),
        policy=policy,
    )


def policy_document(message: scheduler_pb2.SchedulePolicy) -> dict[str, Any]:
    """The JSON form of a ``SchedulePolicy`` message (what ``parse_policy`` reads).

    Only the fields set appear, so an unset bound stays the service's.
    """
    return MessageToDict(message, preserving_proto_field_name=True)


def policy_message(document: dict[str, Any]) -> scheduler_pb2.SchedulePolicy:
    """The ``SchedulePolicy`` message of a policy's JSON form (``policy_to_dict``'s output).

    Raises ``google.protobuf.json_format.ParseError`` for a key or value the
    message has no place for.
    """
    return ParseDict(document, scheduler_pb2.SchedulePolicy())


def history_entry(entry: HistoryEntry, display: Display) -> scheduler_pb2.ScheduleHistoryEntry:
    """The ``ScheduleHistoryEntry`` of one history row; ``lag_seconds`` from ``lag_ms``."""
    return scheduler_pb2.ScheduleHistoryEntry(
        id=entry.id,
        avatar_id=entry.avatar_id,
        trigger=entry.trigger,
        planned_time=display.format(entry.planned_time),
        started_time=display.format(entry.started_time),
        finished_time=display.format(entry.finished_time),
        outcome=entry.outcome,
        action_type=entry.action_type or "",
        action_id=entry.action_id or 0,
        error=entry.error or "",
        lag_seconds=(entry.lag_ms or 0) / 1000,
    )
