from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnableAvatarScheduleRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    def __init__(self, avatar_id: _Optional[int] = ...) -> None: ...

class EnableAvatarScheduleResponse(_message.Message):
    __slots__ = ("code", "message", "info")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    info: ScheduleInfo
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., info: _Optional[_Union[ScheduleInfo, _Mapping]] = ...) -> None: ...

class PauseAvatarScheduleRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    def __init__(self, avatar_id: _Optional[int] = ...) -> None: ...

class PauseAvatarScheduleResponse(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ResumeAvatarScheduleRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    def __init__(self, avatar_id: _Optional[int] = ...) -> None: ...

class ResumeAvatarScheduleResponse(_message.Message):
    __slots__ = ("code", "message", "info")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    info: ScheduleInfo
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., info: _Optional[_Union[ScheduleInfo, _Mapping]] = ...) -> None: ...

class GetAvatarScheduleStatusRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    def __init__(self, avatar_id: _Optional[int] = ...) -> None: ...

class GetAvatarScheduleStatusResponse(_message.Message):
    __slots__ = ("code", "message", "info")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    info: ScheduleInfo
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., info: _Optional[_Union[ScheduleInfo, _Mapping]] = ...) -> None: ...

class TriggerScheduleRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    def __init__(self, avatar_id: _Optional[int] = ...) -> None: ...

class TriggerScheduleResponse(_message.Message):
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

class BatchGetScheduleStatusRequest(_message.Message):
    __slots__ = ("avatar_ids",)
    AVATAR_IDS_FIELD_NUMBER: _ClassVar[int]
    avatar_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, avatar_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class BatchGetScheduleStatusResponse(_message.Message):
    __slots__ = ("code", "message", "schedules")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    schedules: _containers.RepeatedCompositeFieldContainer[ScheduleInfo]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., schedules: _Optional[_Iterable[_Union[ScheduleInfo, _Mapping]]] = ...) -> None: ...

class ScheduleInfo(_message.Message):
    __slots__ = ("avatar_id", "status", "next_schedule_time", "last_schedule_time", "last_action_type", "schedule_count", "failed_count", "created_at", "updated_at", "policy")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SCHEDULE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SCHEDULE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    status: str
    next_schedule_time: str
    last_schedule_time: str
    last_action_type: str
    schedule_count: int
    failed_count: int
    created_at: str
    updated_at: str
    policy: str
    def __init__(self, avatar_id: _Optional[int] = ..., status: _Optional[str] = ..., next_schedule_time: _Optional[str] = ..., last_schedule_time: _Optional[str] = ..., last_action_type: _Optional[str] = ..., schedule_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class DisableAvatarScheduleRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    def __init__(self, avatar_id: _Optional[int] = ...) -> None: ...

class DisableAvatarScheduleResponse(_message.Message):
    __slots__ = ("code", "message", "info")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    info: ScheduleInfo
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., info: _Optional[_Union[ScheduleInfo, _Mapping]] = ...) -> None: ...

class GetAvatarScheduleHistoryRequest(_message.Message):
    __slots__ = ("avatar_id", "limit", "cursor")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    limit: int
    cursor: int
    def __init__(self, avatar_id: _Optional[int] = ..., limit: _Optional[int] = ..., cursor: _Optional[int] = ...) -> None: ...

class GetAvatarScheduleHistoryResponse(_message.Message):
    __slots__ = ("code", "message", "entries", "next_cursor")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    entries: _containers.RepeatedCompositeFieldContainer[ScheduleHistoryEntry]
    next_cursor: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[ScheduleHistoryEntry, _Mapping]]] = ..., next_cursor: _Optional[int] = ...) -> None: ...

class ScheduleHistoryEntry(_message.Message):
    __slots__ = ("id", "avatar_id", "trigger", "planned_time", "started_time", "finished_time", "outcome", "action_type", "action_id", "error", "lag_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    PLANNED_TIME_FIELD_NUMBER: _ClassVar[int]
    STARTED_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISHED_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ACTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    avatar_id: int
    trigger: str
    planned_time: str
    started_time: str
    finished_time: str
    outcome: str
    action_type: str
    action_id: int
    error: str
    lag_seconds: float
    def __init__(self, id: _Optional[int] = ..., avatar_id: _Optional[int] = ..., trigger: _Optional[str] = ..., planned_time: _Optional[str] = ..., started_time: _Optional[str] = ..., finished_time: _Optional[str] = ..., outcome: _Optional[str] = ..., action_type: _Optional[str] = ..., action_id: _Optional[int] = ..., error: _Optional[str] = ..., lag_seconds: _Optional[float] = ...) -> None: ...

class SchedulePolicy(_message.Message):
    __slots__ = ("time_zone", "windows", "min_interval_hours", "max_interval_hours", "day_rates", "quiet_dates")
    class DayRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_HOURS_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERVAL_HOURS_FIELD_NUMBER: _ClassVar[int]
    DAY_RATES_FIELD_NUMBER: _ClassVar[int]
    QUIET_DATES_FIELD_NUMBER: _ClassVar[int]
    time_zone: str
    windows: _containers.RepeatedCompositeFieldContainer[ActiveWindow]
    min_interval_hours: float
    max_interval_hours: float
    day_rates: _containers.ScalarMap[str, float]
    quiet_dates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, time_zone: _Optional[str] = ..., windows: _Optional[_Iterable[_Union[ActiveWindow, _Mapping]]] = ..., min_interval_hours: _Optional[float] = ..., max_interval_hours: _Optional[float] = ..., day_rates: _Optional[_Mapping[str, float]] = ..., quiet_dates: _Optional[_Iterable[str]] = ...) -> None: ...

class ActiveWindow(_message.Message):
    __slots__ = ("start", "end", "days")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    days: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., days: _Optional[_Iterable[str]] = ...) -> None: ...

class SetAvatarSchedulePolicyRequest(_message.Message):
    __slots__ = ("avatar_id", "policy")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    policy: SchedulePolicy
    def __init__(self, avatar_id: _Optional[int] = ..., policy: _Optional[_Union[SchedulePolicy, _Mapping]] = ...) -> None: ...

class SetAvatarSchedulePolicyResponse(_message.Message):
    __slots__ = ("code", "message", "policy", "info", "redrawn")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    REDRAWN_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    policy: SchedulePolicy
    info: ScheduleInfo
    redrawn: bool
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., policy: _Optional[_Union[SchedulePolicy, _Mapping]] = ..., info: _Optional[_Union[ScheduleInfo, _Mapping]] = ..., redrawn: _Optional[bool] = ...) -> None: ...

class GetAvatarSchedulePolicyRequest(_message.Message):
    __slots__ = ("avatar_id",)
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    avatar_id: int
    def __init__(self, avatar_id: _Optional[int] = ...) -> None: ...

class GetAvatarSchedulePolicyResponse(_message.Message):
    __slots__ = ("code", "message", "policy", "summary", "is_default", "effective_time_zone", "effective_min_interval_hours", "effective_max_interval_hours")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_MIN_INTERVAL_HOURS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_MAX_INTERVAL_HOURS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    policy: SchedulePolicy
    summary: str
    is_default: bool
    effective_time_zone: str
    effective_min_interval_hours: float
    effective_max_interval_hours: float
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., policy: _Optional[_Union[SchedulePolicy, _Mapping]] = ..., summary: _Optional[str] = ..., is_default: _Optional[bool] = ..., effective_time_zone: _Optional[str] = ..., effective_min_interval_hours: _Optional[float] = ..., effective_max_interval_hours: _Optional[float] = ...) -> None: ...

class SetSchedulePoliciesRequest(_message.Message):
    __slots__ = ("avatar_ids", "policy")
    AVATAR_IDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    avatar_ids: _containers.RepeatedScalarFieldContainer[int]
    policy: SchedulePolicy
    def __init__(self, avatar_ids: _Optional[_Iterable[int]] = ..., policy: _Optional[_Union[SchedulePolicy, _Mapping]] = ...) -> None: ...

class SetSchedulePoliciesResponse(_message.Message):
    __slots__ = ("code", "message", "updated", "redrawn", "missing_avatar_ids")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    REDRAWN_FIELD_NUMBER: _ClassVar[int]
    MISSING_AVATAR_IDS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    updated: int
    redrawn: int
    missing_avatar_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., updated: _Optional[int] = ..., redrawn: _Optional[int] = ..., missing_avatar_ids: _Optional[_Iterable[int]] = ...) -> None: ...
