"""A real Redis Cluster on loopback: three masters, no replicas, each in its own temp dir.

``redis-server --cluster-enabled yes`` three times, joined with ``redis-cli
--cluster create``, then polled until every node reports ``cluster_state:ok``
with all 16384 slots served. Used by the cluster tests and, with
``Redis.Type: cluster``, by a chaos run. Every node is stopped by its PID.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from me2_devkit.testing.servers import RedisServer, ServerStartError, find_binary, free_port

CLUSTER_SLOTS = 16384
READY_DEADLINE_S = 30.0
NODE_TIMEOUT_MS = 5000
BUS_PORT_OFFSET = 10000  # a node also listens on port + 10000 for the cluster bus


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000, so at most 65535) is free too."""
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port


@dataclass
class RedisClusterServers:
    """``masters`` cluster-enabled redis-servers under ``root``, joined into one cluster."""

    root: Path
    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    def start(self) -> RedisClusterServers:
        """Start the nodes, create the cluster, wait until it serves every slot.

        Raises ServerStartError (the nodes started so far are stopped first).
        """
        try:
            for i in range(self.masters):
                node = RedisServer(
                    root=self.root / f"node{i}", port=cluster_port(), extra_args=self._node_args()
                )
                self.nodes.append(node.start())
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _node_args() -> tuple[str, ...]:
        flags = {
            "--cluster-enabled": "yes",
            "--cluster-config-file": "nodes.conf",  # inside the node's --dir
            "--cluster-node-timeout": str(NODE_TIMEOUT_MS),
        }
        return tuple(chain.from_iterable(flags.items()))

    def _create(self) -> None:
        argv = [find_binary("redis-cli"), "--cluster", "create", *self.addresses]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ServerStartError(f"redis-cli --cluster create failed: {done.stdout[-500:]}")

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + READY_DEADLINE_S
        while not all(self._node_ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise ServerStartError(f"cluster not ok after {READY_DEADLINE_S}s")
            time.sleep(0.1)

    @staticmethod
    def _node_ok(node: RedisServer) -> bool:
        argv = [find_binary("redis-cli"), "-p", str(node.port), "cluster", "info"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        info = dict(line.strip().split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(
            CLUSTER_SLOTS
        )

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every node."""
        return [node.address for node in self.nodes]

    @property
    def hosts(self) -> str:
        """The seeds as ``Redis.Host`` takes them: comma-separated."""
        return ",".join(self.addresses)

    def stop(self) -> None:
        """Stop every node by its PID."""
        for node in self.nodes:
            node.stop()
