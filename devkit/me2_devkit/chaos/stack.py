"""The servers and the service of one chaos run, started and stopped together.

Every run has its own MariaDB, Redis (or a given Redis Cluster) and Action
simulator (``clocked_action``: it notes when each key arrived), and
``me2-scheduler run`` as a real process tree. MySQL notes the insert time of
each history row (``servertime.install_history_clock``). The in-flight
scenario puts a ``Gate`` in front of Action.

The network scenario also starts etcd, where the Action simulator is
registered as ``action.rpc``, and a ``proxyhost`` child with a fault proxy
in front of each server: the service reaches MariaDB, Redis, etcd (for its
own registration and to find Action) and Action only through them. The run
itself (its journal, its audit) talks to the servers directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from me2_devkit.chaos.gate import Gate
from me2_devkit.chaos.netfaults import skewed_service
from me2_devkit.chaos.options import INFLIGHT, ChaosOptions
from me2_devkit.chaos.proxyhost import ProxyHost
from me2_devkit.chaos.servertime import install_history_clock
from me2_devkit.testing.configs import service_config, write_config
from me2_devkit.testing.etcd import EtcdServer
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port, temp_root
from me2_devkit.testing.stack import (
    PYTHON,
    ListeningChild,
    ManagedProcess,
    Service,
    cli_argv,
)
from me2_scheduler.config import EtcdConf, RedisConf, load_config
from me2_scheduler.discovery.registry import Publisher
from me2_scheduler.errors import SchedulerError

DATABASE = "chaos"
REDIS_KEY = "me2:chaos"
SETUP_DEADLINE_S = 120.0
ACTION_KEY, SERVICE_KEY = "action.rpc", "scheduler.rpc"  # etcd keys (network scenario)
ARRIVALS_DEADLINE_S = 60.0


class ChaosError(SchedulerError):
    """The chaos run could not be carried out (a server or the service did not start)."""


@dataclass(frozen=True)
class RedisTarget:
    """The Redis the service uses: a node the run may restart, or a cluster's seeds."""

    host: str
    type: str = "node"
    server: RedisServer | None = None

    @property
    def conf(self) -> RedisConf:
        return RedisConf(host=self.host, type=self.type, key=REDIS_KEY)


@dataclass
class ClockedAction(ListeningChild):
    """The Action simulator process of ``clocked_action``."""

    root: Path
    seed: int
    process: ManagedProcess | None = None
    address: str = ""

    @property
    def times_path(self) -> Path:
        return self.root / "action-arrivals.json"

    def start(self) -> ClockedAction:
        argv = [
            PYTHON,
            "-m",
            "me2_devkit.chaos.clocked_action",
            "--listen",
            "127.0.0.1:0",
            "--times",
            str(self.times_path),
            "--seed",
            str(self.seed),
        ]
        self._launch(argv, "action-simulator.log")
        return self

    def arrivals(self) -> dict[str, list[float]]:
        """When each key's calls arrived; raises ChaosError when the file never comes."""
        import json

        self.times_path.unlink(missing_ok=True)
        os.kill(self.process.pid, signal.SIGUSR1)  # type: ignore[union-attr]
        deadline = time.monotonic() + ARRIVALS_DEADLINE_S
        while not self.times_path.exists():
            if time.monotonic() > deadline:
                raise ChaosError("the Action simulator wrote no arrival times")
            time.sleep(0.1)
        return json.loads(self.times_path.read_text(encoding="utf-8"))


@dataclass
class Network:
    """The network scenario's parts: etcd, Action registered there, the proxies."""

    etcd: EtcdServer
    proxies: ProxyHost
    publisher: Publisher

    def address(self, server: str) -> str:
        """Where the service reaches ``server`` (mariadb, redis, action, etcd)."""
        return self.proxies.addresses[server]


@dataclass
class Stack:
    """The run's servers and service, and where their files are."""

    root: Path
    mariadb: MariaDBServer
    redis: RedisTarget
    simulator: ClockedAction
    options: ChaosOptions
    gate: Gate | None = None  # in front of Action (the in-flight scenario)
    network: Network | None = None
    config_path: Path = field(init=False)
    service: Service = field(init=False)

    def write_config(self, name: str) -> Path:
        """The service's config on compressed time (see ``bounds``), written as ``name``.yaml."""
        options, net = self.options, self.network
        mysql = net.address("mariadb") if net else self.mariadb.address
        dsn = f"root@tcp({mysql})/{DATABASE}?charset=utf8mb4&parseTime=true&timeout=3s"
        redis_host = net.address("redis") if net else self.redis.host
        action: dict[str, Any] = {"Endpoints": [self.action_address]}
        extra: dict[str, Any] = {}
        if net:
            etcd = [net.address("etcd")]
            action = {"Etcd": {"Hosts": etcd, "Key": ACTION_KEY}}
            extra["Etcd"] = {"Hosts": etcd, "Key": SERVICE_KEY}
        settings = service_config(
            data_source=dsn,
            redis_host=redis_host,
            redis_key=REDIS_KEY,
            listen_on=f"127.0.0.1:{free_port()}",
            Mysql={"DataSource": dsn, "PoolSize": 4},
            Redis={"Host": redis_host, "Type": self.redis.type, "Key": REDIS_KEY},
            ActionRpc={**action, "Timeout": options.action_timeout_ms},
            DiaryRpc={"Endpoints": [self.simulator.address]},
            Schedule=self.schedule(),
            ActionSchedule={"MinIntervalHours": 2 / 3600, "MaxIntervalHours": 6 / 3600},
            DiarySchedule={"CronExpression": "0 3 1 1 *"},
            Log={"Encoding": "plain", "Level": "info"},
            Prometheus={"Host": "127.0.0.1", "Port": free_port()},
            **extra,
        )
        return write_config(self.root / f"{name}.yaml", settings)

    @property
    def action_address(self) -> str:
        """Where the service calls Action: through the gate when there is one."""
        return self.gate.address if self.gate else self.simulator.address

    @property
    def metrics_url(self) -> str:
        """The supervisor's /metrics (every process's figures)."""
        conf = load_config(str(self.config_path)).prometheus
        return f"http://{conf.host}:{conf.port}{conf.path}"

    def schedule(self) -> dict[str, float]:
        """``Schedule`` on seconds, matching ``bounds``."""
        options, bounds = self.options, self.options.bounds
        return {
            "ScanInterval": bounds.scan_interval_s,
            "MaxWorkers": options.workers,
            "MaxInFlight": options.max_in_flight,
            "PollInterval": bounds.poll_interval_s,
            "ClaimBatch": 200,
            "LeaseSeconds": options.lease_s,
            "RetryDelaySeconds": bounds.retry_s,
            "MaxConsecutiveFailures": bounds.max_failures,
            "SweepGraceSeconds": bounds.sweep_grace_s,
            "ShutdownTimeoutSeconds": 10,
        }

    @property
    def rpc_target(self) -> str:
        for line in self.config_path.read_text().splitlines():
            if line.startswith("ListenOn:"):
                return line.split(":", 1)[1].strip()
        raise ChaosError("no ListenOn in the chaos config")

    def start_second(self, offset: str = "") -> Service:
        """Another supervisor on the same servers; its clock ``offset`` off (libfaketime)."""
        name = "scheduler-second"
        if offset:
            name += "-behind" if offset.startswith("-") else "-ahead"
        config = self.write_config(name)
        if offset:
            return skewed_service(config, self.root, offset, f"service-{name}")
        return Service(config, self.root).start("service-second")


@contextmanager
def started_stack(options: ChaosOptions, redis: RedisTarget | None) -> Iterator[Stack]:
    """Start the servers and the service (see the module docstring); stop them all after."""
    root = options.root or temp_root("me2-chaos-")
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stops:
        mariadb = MariaDBServer(root=root / "mariadb").start()
        stops.callback(mariadb.stop)
        if redis is None:
            server = RedisServer(root=root / "redis").start()
            stops.callback(server.stop)
            redis = RedisTarget(server.address, "node", server)
        simulator = ClockedAction(root, options.seed).start()
        stops.callback(simulator.stop)
        gate = network = None
        if options.scenario == INFLIGHT:
            gate = Gate(simulator.address).start()
            stops.callback(gate.stop)
        if options.network:
            network = _start_network(stops, root, options, mariadb, redis, simulator)
        stack = Stack(root, mariadb, redis, simulator, options, gate, network)
        mariadb.create_database(DATABASE)
        stack.config_path = stack.write_config("scheduler")
        _init_db(stack.config_path)
        install_history_clock(mariadb.port, DATABASE)
        stack.service = Service(stack.config_path, root).start()
        stops.callback(stack.service.stop)
        stack.service.wait_ready(SETUP_DEADLINE_S)
        yield stack


def _start_network(
    stops: ExitStack,
    root: Path,
    options: ChaosOptions,
    mariadb: MariaDBServer,
    redis: RedisTarget,
    simulator: ClockedAction,
) -> Network:
    """etcd, the proxies in front of every server, and Action registered in etcd."""
    etcd = EtcdServer(root=root / "etcd").start()
    stops.callback(etcd.stop)
    targets = {
        "mariadb": mariadb.address,
        "redis": redis.host,
        "action": simulator.address,
        "etcd": etcd.address,
    }
    proxies = ProxyHost(targets, seed=options.seed, log_path=root / "proxies.log").start()
    stops.callback(proxies.stop)
    # Registered directly (not through the proxy): etcd's faults are the service's to bear.
    action = proxies.addresses["action"]
    publisher = Publisher(EtcdConf(hosts=(etcd.address,), key=ACTION_KEY), action)
    publisher.start()
    stops.callback(publisher.stop)
    return Network(etcd, proxies, publisher)


def _init_db(config_path: Path) -> None:
    done = subprocess.run(
        cli_argv("init-db", "-f", str(config_path)), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ChaosError(f"init-db failed: {done.stderr.strip()[-500:]}")
