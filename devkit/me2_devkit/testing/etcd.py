"""A real single-member etcd on free loopback ports, in a temp dir, for tests and demos.

Started from the system binary (Debian's ``etcd-server``, installed by
``scripts/ensure-system.sh``), listening on 127.0.0.1 only, stopped by its PID.
``etcdctl`` runs against it for what a test does behind the service's back
(deleting a key, enabling auth).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from itertools import chain

from me2_devkit.testing.servers import (
    ServerStartError,
    _Server,
    find_binary,
    free_port,
)


@dataclass
class EtcdServer(_Server):
    """``etcd`` with its own data dir; client port ``port``, peer port ``peer_port``.

    With ``tls`` (certificate, key, CA file) clients connect over TLS and must
    present a certificate signed by that CA.
    """

    peer_port: int = field(default_factory=free_port)
    tls: tuple[str, str, str] | None = None

    def start(self) -> EtcdServer:
        self.root.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        flags = {
            "--name": "default",
            "--data-dir": str(self.root / "data"),
            "--listen-client-urls": self.url,
            "--advertise-client-urls": self.url,
            "--listen-peer-urls": peer,
            "--initial-advertise-peer-urls": peer,
            "--initial-cluster": f"default={peer}",
            "--log-level": "warn",
        }
        argv = [find_binary("etcd"), *chain.from_iterable(flags.items())]
        if self.tls is not None:
            cert, key, ca = self.tls
            argv += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca]
            argv.append("--client-cert-auth")
        self._launch(argv, 30)
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def ctl(self, *args: str, user: str = "") -> str:
        """Run ``etcdctl`` (API v3) against this server; return stdout, raise on failure."""
        argv = [find_binary("etcdctl"), "--endpoints", self.address, "--dial-timeout", "5s"]
        argv += [f"--user={user}"] if user else []
        done = subprocess.run(
            [*argv, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
            check=False,
        )
        if done.returncode != 0:
            raise ServerStartError(f"etcdctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout
