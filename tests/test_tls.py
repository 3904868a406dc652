"""TLS and mutual TLS on real handshakes, with certificates made by openssl in the test.

The Scheduler server is checked through its health service (TLS guards every
call alike); the Action client through a TLS Action simulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from me2_devkit.simulators import ActionSimulator
from me2_devkit.testing.certs import Pair, Pki, make_pki
from me2_scheduler.clients import ActionClient
from me2_scheduler.config import Config, ConfigError, RpcClientConf, load_config
from me2_scheduler.errors import DownstreamError
from me2_scheduler.protos import scheduler_pb2_grpc
from me2_scheduler.rpc_server.server import RpcServer, build_server
from me2_scheduler.tls import channel_credentials, server_credentials

from .support import write_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def scheduler_server(config: Config) -> Iterator[RpcServer]:
    rpc = build_server(config, scheduler_pb2_grpc.SchedulerServicer(), max_workers=4)
    rpc.start()
    try:
        yield rpc
    finally:
        rpc.stop(0)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[RpcServer]:
    config = Config(listen_on="127.0.0.1:0", cert_file=pki.server.cert, key_file=pki.server.key)
    yield from scheduler_server(config)


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[RpcServer]:
    config = Config(
        listen_on="127.0.0.1:0",
        cert_file=pki.server.cert,
        key_file=pki.server.key,
        ca_file=pki.ca.cert,
    )
    yield from scheduler_server(config)


def health(port: int, credentials: grpc.ChannelCredentials | None) -> int:
    """The health status over a TLS channel (plaintext when ``credentials`` is None)."""
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def refused(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        health(port, credentials)
    return raised.value.code()


SERVING = health_pb2.HealthCheckResponse.SERVING


def test_a_client_that_trusts_the_ca_completes_a_tls_handshake(tls_server, pki):
    assert health(tls_server.port, channel_credentials(pki.ca.cert)) == SERVING


def test_a_client_without_the_ca_is_refused(tls_server, pki):
    assert refused(tls_server.port, channel_credentials(pki.other_ca.cert)) == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_a_plaintext_client_is_refused_by_a_tls_server(tls_server):
    assert refused(tls_server.port, None) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_accepts_a_client_certificate_signed_by_the_ca(mtls_server, pki):
    credentials = channel_credentials(pki.ca.cert, pki.client.cert, pki.client.key)
    assert health(mtls_server.port, credentials) == SERVING


@pytest.mark.parametrize("client", [None, "other_client"])
def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(mtls_server, pki, client):
    pair: Pair | None = getattr(pki, client) if client else None
    credentials = channel_credentials(
        pki.ca.cert, pair.cert if pair else "", pair.key if pair else ""
    )
    assert refused(mtls_server.port, credentials) == grpc.StatusCode.UNAVAILABLE


# --- the Action client over TLS ----------------------------------------------------------------


def action_server(pki: Pki, *, mutual: bool) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    ActionSimulator().add_to_server(server)
    ca = pki.ca.cert if mutual else ""
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(pki.server.cert, pki.server.key, ca)
    )
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize("mutual", [False, True])
def test_action_client_calls_a_tls_action_service(pki, mutual):
    server, address = action_server(pki, mutual=mutual)
    conf = RpcClientConf(endpoints=(address,), ca_file=pki.ca.cert)
    if mutual:
        conf = replace(conf, cert_file=pki.client.cert, key_file=pki.client.key)
    try:
        with ActionClient(conf) as client:
            assert client.schedule_action(1, "1:0", "manual").action_id > 0
    finally:
        server.stop(0)


@pytest.mark.parametrize("trusted", [None, "other_ca"], ids=["plaintext", "untrusted-ca"])
def test_action_client_without_the_ca_cannot_reach_a_tls_action_service(pki, trusted):
    server, address = action_server(pki, mutual=False)
    ca_file = getattr(pki, trusted).cert if trusted else ""
    try:
        client = ActionClient(RpcClientConf(endpoints=(address,), ca_file=ca_file))
        with client, pytest.raises(DownstreamError) as raised:
            client.schedule_action(1, "1:0", "manual")
        assert raised.value.unavailable
    finally:
        server.stop(0)


# --- config -------------------------------------------------------------------------------------


def tls_config(tmp_path: Path, extra: str) -> str:
    """A minimal config plus ``extra`` (which may bring its own ActionRpc block); its path."""
    action = "" if "ActionRpc:" in extra else "ActionRpc:\n  Endpoints: [127.0.0.1:8007]\n"
    text = f"Mysql:\n  DataSource: u@tcp(127.0.0.1:3306)/db\n{action}{extra}"
    return str(write_config(tmp_path / "scheduler.yaml", text))


def test_tls_files_are_read_from_the_config(tmp_path, pki):
    extra = f"CertFile: {pki.server.cert}\nKeyFile: {pki.server.key}\nCACertFile: {pki.ca.cert}\n"
    config = load_config(tls_config(tmp_path, extra))
    files = (config.cert_file, config.key_file, config.ca_file)
    assert files == (pki.server.cert, pki.server.key, pki.ca.cert)


BAD_TLS_SETTINGS = [
    ("CertFile: {cert}\n", "KeyFile"),
    ("KeyFile: {key}\n", "CertFile"),
    ("CACertFile: {ca}\n", "CertFile"),
    ("CertFile: /nonexistent/server.pem\nKeyFile: {key}\n", "CertFile"),
    ("ActionRpc:\n  Endpoints: [127.0.0.1:8007]\n  CertFile: {cert}\n", "ActionRpc.KeyFile"),
    (
        "ActionRpc:\n  Endpoints: [127.0.0.1:8007]\n  CACertFile: /nonexistent\n",
        "ActionRpc.CACertFile",
    ),
    ("Etcd:\n  Hosts: [127.0.0.1:2379]\n  Key: s\n  CertFile: {cert}\n", "Etcd.CertKeyFile"),
    (
        "Etcd:\n  Hosts: [127.0.0.1:2379]\n  Key: s\n  InsecureSkipVerify: true\n",
        "Etcd.InsecureSkipVerify",
    ),
]


@pytest.mark.parametrize(("extra", "key"), BAD_TLS_SETTINGS, ids=[k for _, k in BAD_TLS_SETTINGS])
def test_incomplete_or_unreadable_tls_settings_stop_the_start(tmp_path, pki, extra, key):
    text = extra.format(cert=pki.server.cert, key=pki.server.key, ca=pki.ca.cert)
    with pytest.raises(ConfigError) as raised:
        load_config(tls_config(tmp_path, text))
    assert raised.value.key == key
