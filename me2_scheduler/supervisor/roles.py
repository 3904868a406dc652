"""The roles the supervisor runs: what each child process is, how many, when it stops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from me2_scheduler.config import Config

# Shutdown stages, lowest first. The poller stops first so nothing new is
# claimed; workers and the diary then finish what they hold; the gRPC server
# goes last so clients get answers until the end.
STOP_FIRST, STOP_DRAIN, STOP_LAST = 0, 1, 2


@dataclass(frozen=True)
class RoleSpec:
    """One role: ``count`` children each calling ``target(config, ctx)``.

    ``target`` is ``"package.module:function"``, imported in the child only, so
    the supervisor never pays for (or is broken by) a role's imports. A role
    that ``announces_listening`` (the rpc_server) keeps ``/healthz`` at 503
    until its child says it serves (``health.Board.announce_listening``).
    """

    name: str
    target: str
    count: int = 1
    stop_order: int = STOP_DRAIN
    announces_listening: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("RoleSpec.name must not be empty")
        module, _, function = self.target.partition(":")
        if not module or not function:
            raise ValueError(f"RoleSpec.target must be 'module:function', not {self.target!r}")
        if self.count < 0:
            raise ValueError(f"RoleSpec.count must be >= 0, not {self.count}")


def default_roles(config: Config) -> list[RoleSpec]:
    """The service's roles: poller, ``Schedule.MaxWorkers`` workers, diary, rpc_server,
    and the console when ``Console.Enabled``."""
    roles = [
        RoleSpec("poller", "me2_scheduler.workers.poller:main", 1, STOP_FIRST),
        RoleSpec(
            "worker", "me2_scheduler.workers.worker:main", config.schedule.max_workers, STOP_DRAIN
        ),
        RoleSpec("diary", "me2_scheduler.workers.diary:main", 1, STOP_DRAIN),
        RoleSpec("rpc_server", "me2_scheduler.rpc_server.server:main", 1, STOP_LAST, True),
    ]
    if config.console.enabled:
        roles.append(RoleSpec("console", "me2_scheduler.console.server:main", 1, STOP_DRAIN))
    return roles


def check_unique(roles: Sequence[RoleSpec]) -> None:
    """Raise ``ValueError`` if two roles share a name (log lines and metrics key on it)."""
    names = [role.name for role in roles]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate role names: {', '.join(duplicates)}")
