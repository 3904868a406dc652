"""What the server interceptors share: the interceptor that looks at each call's handler,
and a handler rebuilt around another behaviour.

A grpc-python interceptor gets a call's handler (None for an unknown method)
and returns the handler that serves the call: the same one, or one of the
same kind (unary or streamed, each way) running another behaviour.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.ServicerContext], Any]
"""A handler's behaviour: (request or request iterator, context) → response(s)."""

HANDLER_KINDS: tuple[tuple[str, Callable[..., grpc.RpcMethodHandler]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def behavior_of(handler: grpc.RpcMethodHandler) -> Behavior:
    """The behaviour ``handler`` runs, whatever its kind."""
    return next(b for kind, _ in HANDLER_KINDS if (b := getattr(handler, kind)) is not None)


def with_behavior(
    handler: grpc.RpcMethodHandler, behavior: Behavior, *, parsed: bool = True
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` running ``behavior`` instead; it gets the
    request parsed by ``handler``'s deserializer, or, with ``parsed=False``, its raw bytes."""
    make = next(make for kind, make in HANDLER_KINDS if getattr(handler, kind) is not None)
    return make(
        behavior,
        request_deserializer=handler.request_deserializer if parsed else None,
        response_serializer=handler.response_serializer,
    )


class HandlerInterceptor(grpc.ServerInterceptor):
    """An interceptor that decides, from a call's details and handler, what serves it."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        return self.wrap(handler_call_details, continuation(handler_call_details))

    @abc.abstractmethod
    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        """The handler that serves the call: ``handler`` (None: no such method) or another."""
