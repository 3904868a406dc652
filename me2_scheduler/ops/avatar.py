"""``me2-scheduler avatar <action> ID``: one Scheduler API call, so operators need no gRPC tool.

The call goes through the generated stub to ``/scheduler.Scheduler/<Method>``,
the same wire path the other Me2 services use. The answer is shown as text
(code, message, then the info fields or the history entries) or as JSON in
the proto field names.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from me2_scheduler.errors import SchedulerError
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc

ACTIONS = {
    "enable": "EnableAvatarSchedule",
    "pause": "PauseAvatarSchedule",
    "resume": "ResumeAvatarSchedule",
    "disable": "DisableAvatarSchedule",
    "trigger": "TriggerSchedule",
    "get": "GetAvatarScheduleStatus",
    "history": "GetAvatarScheduleHistory",
}
DEFAULT_TIMEOUT_S = 10.0
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}
_HISTORY_COLUMNS = (
    "id",
    "trigger",
    "outcome",
    "planned_time",
    "started_time",
    "finished_time",
    "lag_seconds",
    "action_type",
    "action_id",
    "error",
)


def target_from_listen_on(listen_on: str) -> str:
    """Where to reach a server listening on ``ListenOn`` from this host (``0.0.0.0`` → loopback)."""
    host, _, port = listen_on.strip().rpartition(":")
    return f"{_WILDCARD_HOSTS.get(host, host)}:{port}"


def call(
    target: str,
    action: str,
    avatar_id: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    limit: int = 0,
    cursor: int = 0,
) -> Message:
    """Call the API method of ``action`` (a key of ``ACTIONS``) and return its response.

    ``limit`` and ``cursor`` are for ``history``. Raises KeyError for an
    unknown action, SchedulerError when the call fails at the gRPC level
    (server unreachable, deadline exceeded); a non-zero result ``code`` is a
    normal response, not an error.
    """
    method = ACTIONS[action]
    fields: dict[str, int] = {"avatar_id": avatar_id}
    if action == "history":
        fields.update(limit=limit, cursor=cursor)
    request = getattr(scheduler_pb2, f"{method}Request")(**fields)
    return invoke(target, method, request, timeout_s=timeout_s)


def invoke(
    target: str, method: str, request: Message, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Message:
    """Call the Scheduler API ``method`` with ``request`` and return its response.

    Raises SchedulerError when the call fails at the gRPC level (server
    unreachable, deadline exceeded); a non-zero result ``code`` is a normal
    response, not an error.
    """
    with grpc.insecure_channel(target) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        try:
            return getattr(stub, method)(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise SchedulerError(_describe(target, exc, timeout_s)) from None


def _describe(target: str, exc: grpc.RpcError, timeout_s: float) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"scheduler at {target} is not reachable: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"scheduler at {target} did not answer within {timeout_s:g}s"
    return f"scheduler at {target}: {code.name if code else 'error'}: {details}"


def to_dict(response: Message) -> dict[str, Any]:
    """The response as JSON-ready values, every field present, proto field names."""
    return MessageToDict(
        response,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )


def render(response: Message) -> str:
    """The response as text: its scalar fields, then its info block or entries table."""
    scalars: list[tuple[str, str]] = []
    blocks: list[list[str]] = []
    for field in response.DESCRIPTOR.fields:
        value = getattr(response, field.name)
        if field.message_type is None:
            scalars.append((field.name, str(value)))
        elif field.is_repeated:
            blocks.append(_entries(list(value)))
        elif response.HasField(field.name):
            blocks.append(
                key_values([(f.name, str(getattr(value, f.name))) for f in value.DESCRIPTOR.fields])
            )
    lines = key_values(scalars)
    for block in blocks:
        lines += ["", *block]
    return "\n".join(lines)


def key_values(pairs: list[tuple[str, str]]) -> list[str]:
    """``key  value`` lines, the values aligned."""
    width = max((len(key) for key, _ in pairs), default=0)
    return [f"{key.ljust(width)}  {value}".rstrip() for key, value in pairs]


def _entries(entries: list[Message]) -> list[str]:
    if not entries:
        return ["(no entries)"]
    rows = [_HISTORY_COLUMNS]
    rows += [tuple(_cell(getattr(entry, name)) for name in _HISTORY_COLUMNS) for entry in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HISTORY_COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value) if value not in ("", None) else "-"
