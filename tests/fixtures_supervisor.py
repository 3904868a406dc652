"""Dummy roles and preflights for tests/test_supervisor.py, and the supervisor runner.

Run as ``python tests/fixtures_supervisor.py <spec.json>``: the runner builds a
``Config`` from the spec and calls ``run_service`` with the spec's roles, which
name targets in this module (``fixtures_supervisor:looping``; the script's
directory is on ``sys.path``). Every role records its start in
``$ME2_SUPERVISOR_TEST_DIR/starts`` as ``<role> <index> <pid>`` lines, so the
test knows every pid it must see gone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from me2_scheduler.config import Config, LogConf, ScheduleConf
from me2_scheduler.supervisor import arbiter
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT, ChildContext

DATA_DIR_ENV = "ME2_SUPERVISOR_TEST_DIR"
JOB_SECONDS = 1.5  # the slow dispatch's length

log = logging.getLogger("fixtures_supervisor")


def data_dir() -> Path:
    return Path(os.environ[DATA_DIR_ENV])


def record_start(ctx: ChildContext) -> None:
    """Append ``<role> <index> <pid>`` in one write, so lines from many children never mix."""
    line = f"{ctx.role} {ctx.index} {os.getpid()}\n".encode()
    fd = os.open(data_dir() / "starts", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def looping(config: Config, ctx: ChildContext) -> int:
    """A well-behaved role: idles until asked to stop, then returns 0."""
    record_start(ctx)
    log.info("%s idling", ctx.label, extra={"avatar_id": 42})
    while not ctx.wait(0.1):
        pass
    return 0


def crashing(config: Config, ctx: ChildContext) -> int:
    """Raises at once, every time it is started."""
    record_start(ctx)
    raise RuntimeError("boom")


def cannot_boot(config: Config, ctx: ChildContext) -> int:
    """Says it can never work as configured."""
    record_start(ctx)
    return EXIT_CANNOT_BOOT


def busy_dispatch(config: Config, ctx: ChildContext) -> int:
    """Starts a slow job at once and finishes it even if asked to stop meanwhile."""
    record_start(ctx)
    (data_dir() / "busy").write_text(str(os.getpid()))
    started = time.monotonic()
    while time.monotonic() - started < JOB_SECONDS:
        time.sleep(0.05)  # the job's own work, deliberately deaf to ctx.stop
    (data_dir() / "finished").write_text(f"stop_seen_during_job={ctx.stopping}")
    while not ctx.wait(0.1):
        pass
    return 0


def ignoring_stop(config: Config, ctx: ChildContext) -> int:
    """Never looks at ctx.stop, so only SIGKILL ends it."""
    record_start(ctx)
    while True:
        time.sleep(0.1)


def slow_to_stop(config: Config, ctx: ChildContext) -> int:
    """A first-stage role: takes a while after stop, then marks that it stopped."""
    record_start(ctx)
    while not ctx.wait(0.1):
        pass
    time.sleep(0.5)  # finishing its batch; the next stage must wait for this
    (data_dir() / "first_stopped").write_text("yes")
    return 0


def checks_first_stopped(config: Config, ctx: ChildContext) -> int:
    """A later-stage role: on stop, records whether the first stage had already stopped."""
    record_start(ctx)
    while not ctx.wait(0.1):
        pass
    seen = (data_dir() / "first_stopped").exists()
    (data_dir() / "second_stopped").write_text(f"first_stopped_before={seen}")
    return 0


def preflight_ok(config: Config) -> int:
    (data_dir() / "preflight").write_text(str(os.getpid()))
    return 0


def preflight_unreachable(config: Config) -> int:
    print("error: MySQL 127.0.0.1:1 is unreachable", file=sys.stderr)
    return 1


def _record_restart(self: arbiter.Arbiter, role: str) -> None:
    """Stands in for the metrics hook: writes the restart counter where the test reads it."""
    (data_dir() / "restarts.json").write_text(json.dumps(dict(self.restarts)))


def main(argv: list[str]) -> int:
    """Run the supervisor described by the JSON spec file ``argv[0]``."""
    spec = json.loads(Path(argv[0]).read_text())
    config = Config(
        schedule=ScheduleConf(shutdown_timeout_seconds=spec.get("shutdown_timeout", 5.0)),
        log=LogConf(encoding=spec.get("encoding", "plain"), level="debug"),
    )
    roles = [arbiter.RoleSpec(**role) for role in spec["roles"]]
    backoff = arbiter.Backoff(**spec.get("backoff", {}))
    arbiter.Arbiter._on_child_restart = _record_restart  # type: ignore[method-assign]
    return arbiter.run_service(config, roles, spec.get("preflight"), backoff=backoff)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
