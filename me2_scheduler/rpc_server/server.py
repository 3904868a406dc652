"""The rpc_server child: the Scheduler gRPC service, grpc.health.v1 and (dev/test) reflection.

Reflection is served as v1 and v1alpha, as grpc-go's ``reflection.Register``.

``main`` is the role's entry point (``me2_scheduler.rpc_server.server:main``):
it builds its own store, index and Action client in this process, serves on
``ListenOn`` until ``ctx.stop``, then drains: health turns NOT_SERVING, new
calls are refused, and calls in progress get ``ShutdownTimeoutSeconds``. Once it serves it tells the
supervisor so (``/healthz`` is 503 until then) and pings MySQL and Redis every
second for ``/healthz`` (``rpc_server.probe``).

With ``Etcd.Hosts`` and ``Etcd.Key`` the server registers itself in etcd once
it listens (go-zero's publisher, ``discovery.registry``) and revokes the
registration first thing on stop, so clients stop picking it before it stops
accepting calls. ``Auth: true`` adds go-zero's app/token check
(``rpc_server.auth``); ``CertFile``/``KeyFile`` turn TLS on, and ``CACertFile``
makes it mutual.
"""

from __future__ import annotations

import logging
import random
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from me2_scheduler.clients.action import ActionClient
from me2_scheduler.config import Config
from me2_scheduler.discovery.etcd_client import EtcdError
from me2_scheduler.discovery.registry import Publisher, publish_address
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.errors import SchedulerError
from me2_scheduler.health import board as health_board
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc
from me2_scheduler.rpc_server.auth import AuthInterceptor, redis_token_store
from me2_scheduler.rpc_server.interceptors import (
    AccessLogInterceptor,
    GuardInterceptor,
    TimeoutInterceptor,
)
from me2_scheduler.rpc_server.probe import DependencyProbe
from me2_scheduler.rpc_server.reflection import (
    V1_SERVICE_NAME,
    V1ALPHA_SERVICE_NAME,
    enable_reflection,
)
from me2_scheduler.rpc_server.servicer import SchedulerServicer
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT, EXIT_OK, ChildContext
from me2_scheduler.timefmt import Display
from me2_scheduler.tls import server_credentials

log = logging.getLogger("me2_scheduler.rpc")

SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
REFLECTION_MODES = ("dev", "test")
DEFAULT_MAX_WORKERS = 32


def server_options(config: Config) -> tuple[tuple[str, int], ...]:
    """gRPC server options: ``MaxMsgSize`` both ways, and no port sharing."""
    return (
        ("grpc.max_send_message_length", config.max_msg_size),
        ("grpc.max_receive_message_length", config.max_msg_size),
        # Without this a second server binds the same port silently (SO_REUSEPORT)
        # and the two share the calls; a busy port must fail the boot instead.
        ("grpc.so_reuseport", 0),
    )


class ListenError(SchedulerError):
    """``ListenOn`` cannot be bound (in use, or not a host:port)."""


@dataclass
class RpcServer:
    """A built (bound, not yet started) server, its health servicer and the bound port."""

    server: grpc.Server
    health: health.HealthServicer
    port: int
    timeout: TimeoutInterceptor

    def start(self) -> None:
        """Start serving."""
        self.server.start()

    def stop(self, grace: float | None) -> None:
        """Turn health NOT_SERVING, refuse new calls, give calls in progress ``grace`` s."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.timeout.close()


def build_server(
    config: Config, servicer: SchedulerServicer, *, max_workers: int = DEFAULT_MAX_WORKERS
) -> RpcServer:
    """A server for ``servicer`` bound to ``config.listen_on`` (port 0: any free port).

    Health reports SERVING for "" and ``scheduler.Scheduler``; reflection (v1
    and v1alpha) is on in ``Mode`` dev and test. Raises ``ListenError`` when
    the address cannot be bound, ``ConfigError`` when a TLS file cannot be read.
    """
    credentials = (
        server_credentials(config.cert_file, config.key_file, config.ca_file)
        if config.cert_file
        else None
    )
    timeout = TimeoutInterceptor(config.timeout_ms, max_workers)
    reflected = config.mode in REFLECTION_MODES  # as go-zero's generated main
    services = (SERVICE_NAME, health.SERVICE_NAME)
    if reflected:
        services += (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    interceptors: list[grpc.ServerInterceptor] = [  # outermost first
        GuardInterceptor(services),
        AccessLogInterceptor(),
    ]
    if config.auth:  # inside the access log, so refused calls are logged and counted
        interceptors.append(
            AuthInterceptor(redis_token_store(config), strict=config.strict_control)
        )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers, thread_name_prefix="rpc"),
        interceptors=(*interceptors, timeout),
        options=server_options(config),
    )
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if reflected:
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    try:
        if credentials is None:
            port = server.add_insecure_port(config.listen_on)
        else:
            port = server.add_secure_port(config.listen_on, credentials)
    except RuntimeError:
        timeout.close()
        raise ListenError(f"cannot listen on {config.listen_on}: in use or not host:port") from None
    return RpcServer(server, health_servicer, port, timeout)


def listen_address(listen_on: str, port: int) -> str:
    """``ListenOn`` with the port actually bound (``127.0.0.1:0`` → ``127.0.0.1:41234``)."""
    host = listen_on.rpartition(":")[0]
    return f"{host}:{port}"


def main(config: Config, ctx: ChildContext) -> int:
    """The rpc_server role: serve until ``ctx.stop``, then drain. Returns the exit code.

    Returns ``EXIT_CANNOT_BOOT`` (3) when ``ListenOn`` cannot be bound or the
    first registration in etcd fails, since the service must not run half-up.
    """
    store, index = MysqlStore(config.mysql), DelayIndex(config.redis)
    action = ActionClient(config.action_rpc)
    rng = random.Random()
    dispatcher = Dispatcher(
        config, store, index, action, rng=rng, display=Display(config.timezone).format
    )
    servicer = SchedulerServicer(config, store, index, dispatcher, rng=rng)
    try:
        rpc = build_server(config, servicer)
    except ListenError as exc:
        log.error("rpc_server %s", exc)
        return EXIT_CANNOT_BOOT
    rpc.start()
    address = listen_address(config.listen_on, rpc.port)
    log.info("rpc_server listening on %s", address)
    probe = DependencyProbe({"mysql": store.ping, "redis": index.ping})
    probe.start()
    # Only now may /healthz answer 200: the port accepts and serves calls.
    health_board().announce_listening(address)
    try:
        code = _serve(config, ctx, rpc)
    finally:
        probe.stop()
        servicer.close()
        action.close()
        index.close()
        store.close()
    log.info("rpc_server stopped")
    return code


def _serve(config: Config, ctx: ChildContext, rpc: RpcServer) -> int:
    """Register in etcd (if configured), wait for ``ctx.stop``, unregister, drain."""
    try:
        publisher = register(config, rpc.port)
    except EtcdError as exc:
        log.error("rpc_server cannot register in etcd %s: %s", ",".join(config.etcd.hosts), exc)
        rpc.stop(0)
        return EXIT_CANNOT_BOOT
    ctx.stop.wait()
    if publisher is not None:
        publisher.stop()  # clients stop picking this server before it refuses calls
    log.info("rpc_server stopping: draining calls for up to %gs", _grace(config))
    rpc.stop(_grace(config))
    return EXIT_OK


def register(config: Config, port: int) -> Publisher | None:
    """Register the server in etcd when ``Etcd.Hosts`` and ``Etcd.Key`` are set; raise EtcdError."""
    if not (config.etcd.hosts and config.etcd.key):
        return None
    publisher = Publisher(config.etcd, publish_address(config.listen_on, port))
    publisher.start()
    return publisher


def _grace(config: Config) -> float:
    return config.schedule.shutdown_timeout_seconds
