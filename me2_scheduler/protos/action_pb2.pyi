from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ScheduleActionRequest(_message.Message):
    __slots__ = ("avatar_id", "idempotency_key", "trigger")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    idempotency_key: str
    trigger: str
    def __init__(self, avatar_id: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., trigger: _Optional[str] = ...) -> None: ...

class ScheduleActionResponse(_message.Message):
    __slots__ = ("code", "message", "action_type", "action_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    action_type: str
    action_id: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., action_type: _Optional[str] = ..., action_id: _Optional[int] = ...) -> None: ...
