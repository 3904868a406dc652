"""The network scenario's faults, as the injector carries them out.

- ``<server>_<phase>``: the server's fault proxy in that phase for the
  fault's duration, then back to normal (connections it silenced stay silent).
- ``worker_sigstop`` / ``poller_sigstop``: SIGSTOP a live child of that role,
  SIGCONT it after the fault's duration (always, even when the run is cut short).
- ``mariadb_kill9`` / ``redis_kill9``: SIGKILL the server, start it again
  after the fault's duration (Redis has no persistence: it comes back empty).
- ``second_supervisor_behind`` / ``_ahead``: a second ``me2-scheduler run``
  under libfaketime (``LD_PRELOAD``, ``FAKETIME=-45s`` / ``+45s``). The detail
  says how many of its processes carry the library and what clock its log
  lines show, so the report proves the skew reached every child.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from me2_devkit.chaos import plan as kinds
from me2_devkit.chaos.faultproxy import JITTER, LATENCY, NORMAL
from me2_devkit.chaos.netplan import JITTER_MS, JITTER_SPREAD_MS, LATENCY_MS, OPERATOR_WAIT_S
from me2_devkit.testing.stack import Service, child_pids

if TYPE_CHECKING:
    from me2_devkit.chaos.injector import Targets

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
SKEW = {kinds.SKEWED_BEHIND: "-45s", kinds.SKEWED_AHEAD: "+45s"}
TITLE_PREFIX = b"me2-scheduler: "
FIND_CHILD_S = 10.0  # a just-killed role is back within this (restart backoff + boot)
LISTENING_LINE = "rpc_server listening on"
# Action's phases that fail calls auto-pause most avatars (five failures in a
# row); an operator resumes them once Action answers again, as after an
# outage in the faults scenario, after the channel had time to reconnect.
FAILING_ACTION = frozenset({"resets", "blackhole", "half_open"})


def faketime_env(offset: str) -> dict[str, str]:
    """The environment that puts a process (and every child it forks) ``offset`` off."""
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset}


def children_titled(parent: int, role: str) -> list[int]:
    """Live children of ``parent`` whose process title is ``me2-scheduler: <role>[i]``."""
    wanted = TITLE_PREFIX + role.encode() + b"["
    found = []
    for pid in child_pids(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(wanted):
            found.append(pid)
    return found


def carries_faketime(pid: int) -> bool:
    """Whether ``pid`` has libfaketime mapped (it was preloaded, or inherited by fork)."""
    try:
        return "libfaketime" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def log_clock_offset(log_path: Path, seen_at: float) -> float | None:
    """Seconds between the time in the service's listening line and ``seen_at``."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if LISTENING_LINE in line:
            try:
                stamp = datetime.fromisoformat(line.split("\t", 1)[0])
            except ValueError:
                return None
            return stamp.timestamp() - seen_at
    return None


class NetworkFaults:
    """Mixed into ``Injector``: the handlers of the network scenario's faults."""

    targets: Targets
    rng: random.Random
    _stop: threading.Event
    _wait_until: Callable[[float, float], None]
    _resume_auto_paused: Callable[[], str]

    def network_handler(self, kind: str) -> Callable[[Any, float], str]:
        """The handler of a network fault kind. Raises AttributeError for an unknown kind."""
        if kind in kinds.PROXY_KINDS:
            return self._proxy_phase
        handlers = {
            kinds.WORKER_SIGSTOP: lambda f, t0: self._freeze("worker", f, t0),
            kinds.POLLER_SIGSTOP: lambda f, t0: self._freeze("poller", f, t0),
            kinds.MARIADB_KILL9: self._mariadb_kill9,
            kinds.REDIS_KILL9: self._redis_kill9,
            kinds.SKEWED_BEHIND: self._skewed_supervisor,
            kinds.SKEWED_AHEAD: self._skewed_supervisor,
        }
        if kind not in handlers:
            raise AttributeError(f"no handler for fault kind {kind!r}")
        return handlers[kind]

    def pick_child(self, role: str) -> int:
        """A live child of the supervisor in ``role``. Raises RuntimeError when none shows up."""
        deadline = time.monotonic() + FIND_CHILD_S
        supervisor = self.targets.service.process.pid  # type: ignore[union-attr]
        while not (pids := children_titled(supervisor, role)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no live {role} child of the supervisor")
            time.sleep(0.1)
        return self.rng.choice(sorted(pids))

    def _proxy_phase(self, fault: Any, t0: float) -> str:
        proxies = self.targets.proxies
        if proxies is None:
            raise RuntimeError("this run has no fault proxies")
        server, phase = fault.kind.split("_", 1)
        delay, spread = {LATENCY: (LATENCY_MS, 0.0), JITTER: (JITTER_MS, JITTER_SPREAD_MS)}.get(
            phase, (0.0, 0.0)
        )
        before = proxies.stats(server)
        proxies.set_phase(server, phase, delay, spread)
        try:
            self._wait_until(t0, fault.end_s)
        finally:
            proxies.set_phase(server, NORMAL)
        after = proxies.stats(server)
        timing = f" {delay:g}+{spread:g} ms" if delay else ""
        detail = (
            f"{server} proxy {phase}{timing} for {fault.duration_s:g}s:"
            f" {after['silenced'] - before['silenced']} connections silenced,"
            f" {after['resets'] - before['resets']} reset"
        )
        if server == "action" and phase in FAILING_ACTION:
            self._stop.wait(OPERATOR_WAIT_S)
            detail += f"; after {OPERATOR_WAIT_S:g}s {self._resume_auto_paused()}"
        return detail

    def _freeze(self, role: str, fault: Any, t0: float) -> str:
        pid = self.pick_child(role)
        os.kill(pid, signal.SIGSTOP)
        try:
            self._wait_until(t0, fault.end_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        return f"SIGSTOP {role} pid {pid}, SIGCONT after {fault.duration_s:g}s"

    def _mariadb_kill9(self, fault: Any, t0: float) -> str:
        self._kill9_for(self.targets.mariadb, fault.duration_s)
        return f"kill -9 mariadbd, started again after {fault.duration_s:g}s"

    def _redis_kill9(self, fault: Any, t0: float) -> str:
        if self.targets.redis is None:
            raise RuntimeError("this Redis cannot be killed and started again")
        self._kill9_for(self.targets.redis, fault.duration_s)
        return f"kill -9 redis-server (no persistence), started empty after {fault.duration_s:g}s"

    def _kill9_for(self, server: Any, seconds: float) -> None:
        """kill -9 ``server``, and start it again ``seconds`` later (or on stop)."""
        server.kill()
        self._stop.wait(seconds)
        server.start()

    def _skewed_supervisor(self, fault: Any, t0: float) -> str:
        start = self.targets.start_skewed
        if start is None:
            raise RuntimeError("this run cannot start a skewed supervisor")
        offset = SKEW[fault.kind]
        second = start(offset)
        try:
            second.wait_ready()
            clock = log_clock_offset(second.process.log_path, time.time())  # type: ignore[union-attr]
            pids = [second.process.pid, *second.children()]  # type: ignore[union-attr]
            carrying = sum(carries_faketime(pid) for pid in pids)
            self._wait_until(t0, fault.end_s)
        finally:
            code = second.stop()
        seen = "unknown" if clock is None else f"{clock:+.0f}s"
        return (
            f"FAKETIME={offset}: libfaketime in {carrying}/{len(pids)} processes, log clock"
            f" {seen}; joined for {fault.duration_s:g}s, SIGTERM exit code {code}"
        )


def skewed_service(config_path: Path, root: Path, offset: str, name: str) -> Service:
    """A second supervisor on ``config_path`` whose clock is ``offset`` off."""
    return Service(config_path, root, env=faketime_env(offset)).start(name)
