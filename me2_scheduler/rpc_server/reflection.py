"""gRPC server reflection as grpc-go's ``reflection.Register`` serves it: v1 beside v1alpha.

grpcio-reflection implements only ``grpc.reflection.v1alpha``, while grpcurl,
Postman and grpc-go clients ask for ``grpc.reflection.v1`` first. The v1 proto
is v1alpha's with another package name (the messages are the same on the
wire), so the v1 service is the same servicer under the v1 name. The v1 file
descriptor is added to the default pool once, so that the v1 service, listed
like every other one, can also be described (``grpcurl describe`` with no
symbol describes every listed service).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both."""
    _add_v1_descriptor(descriptor_pool.Default())
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(service, handlers)
            for service in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
        )
    )


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto``: v1alpha's file under the v1 name and package."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{V1_PACKAGE}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    proto.ClearField("options")  # v1alpha's language options name v1alpha packages
    for message in proto.message_type:
        for message_field in message.field:
            if message_field.HasField("type_name"):  # set only on message and enum fields
                message_field.type_name = message_field.type_name.replace(old, new)
    for method in (m for service in proto.service for m in service.method):
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    return proto


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Add the v1 file to ``pool`` unless it is there already."""
    # A grpcio-reflection that ships v1 registers the real file on import:
    # adding ours first would make that import fail (same name, other content).
    with contextlib.suppress(ImportError):
        importlib.import_module("grpc_reflection.v1.reflection_pb2")
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor().SerializeToString())
