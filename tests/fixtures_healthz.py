"""A supervisor whose real rpc_server waits at a gate before it builds its server.

Run as ``python -m tests.fixtures_healthz <config.yaml>`` from the repository:
the service's own roles and preflight, except that the rpc_server child
waits until the file ``$ME2_HEALTHZ_GATE`` exists, then runs the real
``rpc_server.server:main``. A test holds the gate shut to see ``/healthz``
while every child runs but the gRPC port is not bound yet.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from me2_scheduler.config import Config
from me2_scheduler.config.load import load_config
from me2_scheduler.rpc_server import server
from me2_scheduler.supervisor.arbiter import run_service
from me2_scheduler.supervisor.child import ChildContext
from me2_scheduler.supervisor.roles import default_roles

GATE_ENV = "ME2_HEALTHZ_GATE"


def gated_rpc_server(config: Config, ctx: ChildContext) -> int:
    """The real rpc_server, once the gate file exists (or 0 when stopped before)."""
    gate = Path(os.environ[GATE_ENV])
    while not gate.exists():
        if ctx.wait(0.05):
            return 0
    return server.main(config, ctx)


def main(argv: list[str]) -> int:
    """Run the service of config ``argv[0]`` with the gated rpc_server."""
    config = load_config(argv[0])
    roles = [
        replace(role, target="tests.fixtures_healthz:gated_rpc_server")
        if role.name == "rpc_server"
        else role
        for role in default_roles(config)
    ]
    return run_service(config, roles)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
