"""Where go-zero and grpc-go have a default, the service has the same one.

- ``Log.Encoding`` is ``json`` unless a config says ``plain``.
- Server reflection is served as ``grpc.reflection.v1`` beside ``v1alpha`` (dev/test).
- A request that does not parse is INTERNAL ``grpc: error unmarshalling request: ...``
  and one log line; an unknown method is UNIMPLEMENTED in grpc-go's words.

Every call goes over a real channel to a real server on a free port. The
behaviour under test happens before any handler runs, so the servicer is a
small stand-in and no database is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import REGISTRY

from me2_scheduler.config import Config, LogConf
from me2_scheduler.logs import JsonFormatter, PlainFormatter, make_formatter
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.protos import scheduler_pb2_grpc
from me2_scheduler.rpc_server.server import build_server

CALL_TIMEOUT_S = 10
GARBAGE = b"\xff\xff\xff\xff"  # field 31 with wire type 7: no protobuf message parses it
V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVED = {
    "scheduler.Scheduler",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


class EchoStatus(scheduler_pb2_grpc.SchedulerServicer):
    """Answers GetAvatarScheduleStatus with the avatar_id it was asked for."""

    def GetAvatarScheduleStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = pb.ScheduleInfo(avatar_id=request.avatar_id, status="active")
        return pb.GetAvatarScheduleStatusResponse(code=0, info=info)


@contextmanager
def serving(**overrides: Any) -> Iterator[grpc.Channel]:
    """A channel to ``build_server`` of a dev-mode config with ``overrides``."""
    config = replace(Config(), **{"mode": "dev", "listen_on": "127.0.0.1:0", **overrides})
    rpc = build_server(config, EchoStatus(), max_workers=4)  # type: ignore[arg-type]
    rpc.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{rpc.port}")
    try:
        yield channel
    finally:
        channel.close()
        rpc.stop(0)


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    with serving() as channel:
        yield channel


def raw_call(channel: grpc.Channel, path: str, body: bytes, streaming: bool = False) -> Any:
    """Send ``body`` as it is (no serializer) to ``path``; return the answer or raise RpcError."""
    if streaming:
        return list(channel.stream_stream(path)(iter([body]), timeout=CALL_TIMEOUT_S))
    return channel.unary_unary(path)(body, timeout=CALL_TIMEOUT_S)


def reflect(channel: grpc.Channel, path: str, *requests: Any) -> list[Any]:
    call = channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=CALL_TIMEOUT_S))


def listed(channel: grpc.Channel, path: str) -> set[str]:
    [answer] = reflect(channel, path, reflection_pb2.ServerReflectionRequest(list_services=""))
    return {service.name for service in answer.list_services_response.service}


def failure(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value


# --- Log.Encoding -------------------------------------------------------------------------


def test_logs_are_json_unless_the_config_says_plain() -> None:
    assert isinstance(make_formatter(Config().log, "worker[0]"), JsonFormatter)
    assert isinstance(make_formatter(LogConf(encoding="plain"), "worker[0]"), PlainFormatter)


# --- reflection ---------------------------------------------------------------------------


def test_reflection_v1_lists_every_service_as_v1alpha_does(channel: grpc.Channel) -> None:
    assert listed(channel, V1) == listed(channel, V1ALPHA) == SERVED


def test_every_service_reflection_v1_lists_can_be_described(channel: grpc.Channel) -> None:
    asks = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in SERVED]
    for name, answer in zip(SERVED, reflect(channel, V1, *asks), strict=True):
        assert not answer.HasField("error_response"), name
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        described = {f"{f.package}.{s.name}" for f in files for s in f.service}
        assert name in described


def test_the_v1_reflection_service_is_described_in_its_own_package(channel: grpc.Channel) -> None:
    ask = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="grpc.reflection.v1.ServerReflection"
    )
    [answer] = reflect(channel, V1, ask)
    [raw] = answer.file_descriptor_response.file_descriptor_proto
    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert (proto.name, proto.package) == (
        "grpc/reflection/v1/reflection.proto",
        "grpc.reflection.v1",
    )
    [method] = proto.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"


def test_without_dev_or_test_mode_neither_reflection_version_is_served() -> None:
    with serving(mode="pro") as channel:
        error = failure(listed, channel, V1)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert error.details() == "unknown service grpc.reflection.v1.ServerReflection"


# --- requests that do not parse -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "streaming"),
    [
        ("/scheduler.Scheduler/EnableAvatarSchedule", False),
        ("/grpc.health.v1.Health/Check", False),
        ("/grpc.health.v1.Health/Watch", True),
        (V1, True),
    ],
)
def test_a_request_that_does_not_parse_is_internal_and_one_log_line_without_traceback(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture, path: str, streaming: bool
) -> None:
    caplog.set_level(logging.INFO)
    error = failure(raw_call, channel, path, GARBAGE, streaming)

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith("grpc: error unmarshalling request: ")
    [record] = caplog.records
    line = PlainFormatter("rpc_server[0]", None).format(record)
    assert "\n" not in line and "Traceback" not in caplog.text
    method = path.removeprefix("/scheduler.Scheduler/")
    assert record.getMessage().startswith(f"rpc {method} peer=ipv4:127.0.0.1:")
    assert "code=INTERNAL" in record.getMessage()


def test_a_scheduler_request_that_does_not_parse_is_counted_as_internal(
    channel: grpc.Channel,
) -> None:
    labels = {"method": "TriggerSchedule", "code": "INTERNAL"}
    before = REGISTRY.get_sample_value("scheduler_rpc_requests_total", labels) or 0
    failure(raw_call, channel, "/scheduler.Scheduler/TriggerSchedule", GARBAGE)
    assert REGISTRY.get_sample_value("scheduler_rpc_requests_total", labels) == before + 1


def test_a_request_that_parses_reaches_the_handler_unchanged(channel: grpc.Channel) -> None:
    body = pb.GetAvatarScheduleStatusRequest(avatar_id=42).SerializeToString()
    answer = raw_call(channel, "/scheduler.Scheduler/GetAvatarScheduleStatus", body)
    assert pb.GetAvatarScheduleStatusResponse.FromString(answer).info.avatar_id == 42
    check = health_pb2.HealthCheckRequest(service="scheduler.Scheduler").SerializeToString()
    status = health_pb2.HealthCheckResponse.FromString(
        raw_call(channel, "/grpc.health.v1.Health/Check", check)
    )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


# --- unknown methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "details"),
    [
        ("/scheduler.Scheduler/Nope", "unknown method Nope for service scheduler.Scheduler"),
        ("/scheduler.Other/EnableAvatarSchedule", "unknown service scheduler.Other"),
        ("/grpc.health.v1.Health/Nope", "unknown method Nope for service grpc.health.v1.Health"),
    ],
)
def test_an_unknown_method_or_service_is_unimplemented_in_grpc_gos_words(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture, path: str, details: str
) -> None:
    caplog.set_level(logging.INFO)
    for streaming in (False, True):
        error = failure(raw_call, channel, path, GARBAGE, streaming)
        assert (error.code(), error.details()) == (grpc.StatusCode.UNIMPLEMENTED, details)
    assert len(caplog.records) == 2  # one line per call, the request never read
    assert all(r.getMessage().startswith(f"rpc {path} peer=") for r in caplog.records)


def test_with_auth_a_call_is_parsed_and_routed_before_its_token_is_checked() -> None:
    # grpc-go parses and routes before any interceptor runs, so neither answer
    # is UNAUTHENTICATED; neither needs the token store (Redis) either.
    with serving(auth=True, strict_control=True) as channel:
        unknown = failure(raw_call, channel, "/scheduler.Scheduler/Nope", b"")
        garbage = failure(raw_call, channel, "/scheduler.Scheduler/EnableAvatarSchedule", GARBAGE)
        body = pb.GetAvatarScheduleStatusRequest(avatar_id=1).SerializeToString()
        refused = failure(raw_call, channel, "/scheduler.Scheduler/GetAvatarScheduleStatus", body)
    assert unknown.code() == grpc.StatusCode.UNIMPLEMENTED
    assert garbage.code() == grpc.StatusCode.INTERNAL
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED  # a good request meets the check
