from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateAvatarDiaryRequest(_message.Message):
    __slots__ = ("avatar_id", "date")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    date: str
    def __init__(self, avatar_id: _Optional[int] = ..., date: _Optional[str] = ...) -> None: ...

class GenerateAvatarDiaryResponse(_message.Message):
    __slots__ = ("code", "message", "diary_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DIARY_ID_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    diary_id: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., diary_id: _Optional[int] = ...) -> None: ...
