"""go-zero's app/token authentication against a real Redis hash, and secrets kept out of sight.

The server under test has no working Scheduler handlers (the generated base
servicer answers UNIMPLEMENTED), so UNIMPLEMENTED means "the call got past
authentication" and any other status is the interceptor's answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from me2_devkit.simulators import ActionSimulator
from me2_devkit.testing.servers import free_port
from me2_scheduler.clients import ActionClient
from me2_scheduler.config import Config, RedisConf, RpcClientConf, describe, load_config
from me2_scheduler.errors import DownstreamError
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc
from me2_scheduler.rpc_server.auth import AuthInterceptor, TokenStore, UnknownApp
from me2_scheduler.rpc_server.server import build_server

pytestmark = pytest.mark.timeout(120)
PASSED = grpc.StatusCode.UNIMPLEMENTED  # the handler was reached


@pytest.fixture
def tokens(redis_server, redis_key) -> Iterator[redis.Redis]:
    """The tokens hash ``Redis.Key`` with app ``me2-api`` → ``t0ken``."""
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    client.hset(redis_key, "me2-api", "t0ken")
    yield client
    client.delete(redis_key)
    client.close()


class AuthServer:
    """A Scheduler server with ``Auth: true``; calling it makes one call and returns the status."""

    def __init__(self, redis_conf: RedisConf, *, strict: bool) -> None:
        config = Config(listen_on="127.0.0.1:0", auth=True, strict_control=strict, redis=redis_conf)
        self.strict = strict
        self.details = ""
        self._rpc = build_server(config, scheduler_pb2_grpc.SchedulerServicer(), max_workers=4)
        self._rpc.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self._rpc.port}")
        self._stub = scheduler_pb2_grpc.SchedulerStub(self.channel)

    def __call__(self, **metadata: str) -> grpc.StatusCode:
        request = scheduler_pb2.GetAvatarScheduleStatusRequest(avatar_id=1)
        with pytest.raises(grpc.RpcError) as raised:
            self._stub.GetAvatarScheduleStatus(
                request, timeout=10, metadata=tuple(metadata.items())
            )
        self.details = raised.value.details()
        return raised.value.code()

    def stop(self) -> None:
        self.channel.close()
        self._rpc.stop(0)


@pytest.fixture(params=[False, True], ids=["lenient", "strict"])
def server(request, redis_server, redis_key, tokens):
    server = AuthServer(
        RedisConf(host=f"127.0.0.1:{redis_server.port}", key=redis_key), strict=request.param
    )
    yield server
    server.stop()


def test_the_right_token_gets_through(server):
    assert server(app="me2-api", token="t0ken") == PASSED


@pytest.mark.parametrize(
    "metadata", [{}, {"app": "me2-api"}, {"token": "t0ken"}, {"app": "", "token": "t0ken"}]
)
def test_missing_app_or_token_is_unauthenticated(server, metadata):
    assert server(**metadata) == grpc.StatusCode.UNAUTHENTICATED
    assert server.details == "app/token required"


def test_a_wrong_token_is_access_denied(server):
    assert server(app="me2-api", token="guess") == grpc.StatusCode.UNAUTHENTICATED
    assert server.details == "access denied"


def test_an_unknown_app_is_internal_when_strict_and_allowed_otherwise(server):
    code = server(app="stranger", token="anything")
    assert code == (grpc.StatusCode.INTERNAL if server.strict else PASSED)


def test_health_checks_need_no_credentials(server):
    stub = health_pb2_grpc.HealthStub(server.channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("strict", [False, True])
def test_a_failed_token_lookup_is_internal_when_strict_and_allowed_otherwise(strict, redis_key):
    server = AuthServer(RedisConf(host=f"127.0.0.1:{free_port()}", key=redis_key), strict=strict)
    try:
        code = server(app="me2-api", token="t0ken")
    finally:
        server.stop()
    assert code == (grpc.StatusCode.INTERNAL if strict else PASSED)


def test_a_token_is_cached_for_five_minutes_and_read_again_after():
    now = [1000.0]
    stored = {"me2-api": "first"}
    reads: list[str] = []

    def lookup(app: str) -> str | None:
        reads.append(app)
        return stored.get(app)

    store = TokenStore(lookup, clock=lambda: now[0])
    assert store.token("me2-api") == "first"
    stored["me2-api"] = "second"
    now[0] += 299
    assert store.token("me2-api") == "first"
    now[0] += 2
    assert store.token("me2-api") == "second"
    assert reads == ["me2-api", "me2-api"]


def test_an_unknown_app_is_not_cached():
    stored: dict[str, str] = {}
    store = TokenStore(stored.get)
    with pytest.raises(UnknownApp):
        store.token("late")
    stored["late"] = "t"
    assert store.token("late") == "t"


# --- the client side ------------------------------------------------------------------------


@pytest.fixture
def guarded_action(redis_server, redis_key, tokens) -> Iterator[str]:
    """An Action simulator behind the auth interceptor (strict)."""
    store = TokenStore(lambda app: tokens.hget(redis_key, app))
    server = grpc.server(
        futures.ThreadPoolExecutor(4), interceptors=(AuthInterceptor(store, strict=True),)
    )
    ActionSimulator().add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_action_client_sends_its_app_and_token(guarded_action):
    conf = RpcClientConf(endpoints=(guarded_action,), app="me2-api", token="t0ken")
    with ActionClient(conf) as client:
        assert client.schedule_action(1, "1:0", "manual").action_id > 0
    with ActionClient(replace(conf, token="")) as client, pytest.raises(DownstreamError) as raised:
        client.schedule_action(1, "1:1", "manual")
    assert "UNAUTHENTICATED" in str(raised.value)


# --- secrets ------------------------------------------------------------------------------------


def test_check_config_masks_every_password_and_token_given_through_the_environment(
    tmp_path, monkeypatch
):
    secrets = {
        "MYSQL_PASS": "mysql-secret-1",
        "REDIS_PASS": "redis-secret-2",
        "ETCD_PASS": "etcd-secret-3",
        "ACTION_TOKEN": "action-secret-4",
        "DIARY_TOKEN": "diary-secret-5",
        "ACTION_ETCD_PASS": "etcd-secret-6",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "scheduler.yaml"
    path.write_text(
        "Mysql:\n  DataSource: root:${MYSQL_PASS}@tcp(127.0.0.1:3306)/db\n"
        'Redis:\n  Pass: "${REDIS_PASS}"\n'
        "Auth: true\nStrictControl: true\n"
        "Etcd:\n  Hosts: [127.0.0.1:2379]\n  Key: scheduler.rpc\n  User: root\n"
        '  Pass: "${ETCD_PASS}"\n'
        "ActionRpc:\n  Etcd:\n    Hosts: [127.0.0.1:2379]\n    Key: action.rpc\n"
        '    User: root\n    Pass: "${ACTION_ETCD_PASS}"\n'
        '  App: scheduler\n  Token: "${ACTION_TOKEN}"\n'
        'DiaryRpc:\n  Endpoints: [127.0.0.1:8009]\n  App: scheduler\n  Token: "${DIARY_TOKEN}"\n'
    )
    config = load_config(str(path))
    assert config.action_rpc.token == "action-secret-4"
    assert config.etcd.password == "etcd-secret-3"
    assert (config.auth, config.strict_control) == (True, True)
    shown = describe(config) + repr(config)
    for value in secrets.values():
        assert value not in shown
    assert "Auth: true" in shown
