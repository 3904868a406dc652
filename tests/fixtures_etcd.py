"""One etcd for the session (every test uses its own key names), a client, Action simulators."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from me2_devkit.simulators import ActionSimulator, RunningSimulator, SimulatorControl, serve
from me2_devkit.testing.etcd import EtcdServer
from me2_devkit.testing.servers import temp_root
from me2_scheduler.config import EtcdConf
from me2_scheduler.discovery.etcd_client import EtcdClient

from .support import serving


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    """One etcd for the session: every test uses its own key names."""
    yield from serving(EtcdServer(root=temp_root("me2-etcd-")))


@pytest.fixture
def key() -> str:
    """A service name no other test uses."""
    return f"svc{uuid.uuid4().hex[:8]}.rpc"


@pytest.fixture
def client(etcd: EtcdServer) -> Iterator[EtcdClient]:
    with EtcdClient(EtcdConf(hosts=(etcd.address,), key="unused")) as etcd_client:
        yield etcd_client


@pytest.fixture
def simulators() -> Iterator[list[RunningSimulator]]:
    """Two Action simulators on free ports."""
    running = [serve(ActionSimulator(seed=i), "127.0.0.1:0") for i in range(2)]
    yield running
    for simulator in running:
        simulator.stop(0)  # a second stop is harmless


def calls_seen(simulator: RunningSimulator) -> int:
    """How many calls ``simulator`` has answered."""
    with SimulatorControl(simulator.address) as control:
        return control.stats().total
