from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("calls_per_avatar", "calls_per_key", "total", "in_flight", "peak_in_flight", "rejected")
    class CallsPerAvatarEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class CallsPerKeyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CALLS_PER_AVATAR_FIELD_NUMBER: _ClassVar[int]
    CALLS_PER_KEY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    PEAK_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    calls_per_avatar: _containers.ScalarMap[int, int]
    calls_per_key: _containers.ScalarMap[str, int]
    total: int
    in_flight: int
    peak_in_flight: int
    rejected: int
    def __init__(self, calls_per_avatar: _Optional[_Mapping[int, int]] = ..., calls_per_key: _Optional[_Mapping[str, int]] = ..., total: _Optional[int] = ..., in_flight: _Optional[int] = ..., peak_in_flight: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...

class ConfigureRequest(_message.Message):
    __slots__ = ("latency_ms", "fail_rate", "set_fail_avatars", "fail_avatars", "set_hang_avatars", "hang_avatars", "hang", "capacity")
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_RATE_FIELD_NUMBER: _ClassVar[int]
    SET_FAIL_AVATARS_FIELD_NUMBER: _ClassVar[int]
    FAIL_AVATARS_FIELD_NUMBER: _ClassVar[int]
    SET_HANG_AVATARS_FIELD_NUMBER: _ClassVar[int]
    HANG_AVATARS_FIELD_NUMBER: _ClassVar[int]
    HANG_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    latency_ms: int
    fail_rate: float
    set_fail_avatars: bool
    fail_avatars: _containers.RepeatedScalarFieldContainer[int]
    set_hang_avatars: bool
    hang_avatars: _containers.RepeatedScalarFieldContainer[int]
    hang: bool
    capacity: int
    def __init__(self, latency_ms: _Optional[int] = ..., fail_rate: _Optional[float] = ..., set_fail_avatars: _Optional[bool] = ..., fail_avatars: _Optional[_Iterable[int]] = ..., set_hang_avatars: _Optional[bool] = ..., hang_avatars: _Optional[_Iterable[int]] = ..., hang: _Optional[bool] = ..., capacity: _Optional[int] = ...) -> None: ...

class ConfigureResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
