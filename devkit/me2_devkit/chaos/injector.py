"""Carries out a fault plan against the running stack and records when each fault was on.

Every fault runs on its own thread, so a slow one (MariaDB taking seconds to
come back) never delays another. The window recorded for a fault is what
really happened (epoch seconds on this host), not what was planned: the
audit excuses and allows by these windows.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis

from me2_devkit.chaos import plan as kinds
from me2_devkit.chaos.gate import Gate
from me2_devkit.chaos.journal import RESUME, Journal, RpcBurst
from me2_devkit.chaos.netfaults import NetworkFaults, children_titled
from me2_devkit.chaos.plan import Fault, FaultPlan
from me2_devkit.chaos.proxyhost import ProxyHost
from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_devkit.testing.stack import Service

log = logging.getLogger("me2_devkit.chaos")

BURST_CALLS = 40
LAGGING_MS = 1000  # the in-flight scenario's slow Action: 1 s a call, under its timeout
HALF = 0.5
# After Action is back, the operator waits this long before resuming the
# avatars it auto-paused: the channel reconnects (backoff up to 5 s) and the
# breaker lets calls through again, so the resumed avatars are not paused anew.
RESUME_AFTER_DOWN_S = 6.0


@dataclass(frozen=True)
class FaultWindow:
    """When one fault was really on: ``start`` to ``end`` (equal for a kill)."""

    kind: str
    start: float
    end: float
    detail: str = ""


@dataclass
class Targets:
    """What the faults act on."""

    service: Service
    mariadb: MariaDBServer
    simulator: SimulatorControl
    journal: Journal
    burst: RpcBurst
    action_timeout_ms: int
    auto_paused_ids: Callable[[], list[int]]
    start_second: Callable[[], Service]
    redis: RedisServer | None = None  # None: Redis cannot be restarted (a cluster)
    gate: Gate | None = None  # in front of Action: shut, Action is down
    # The network scenario: a proxy per server, a supervisor under a skewed clock.
    proxies: ProxyHost | None = None
    start_skewed: Callable[[str], Service] | None = None  # FAKETIME offset, e.g. "-45s"
    lease_s: float = 0.0


@dataclass
class Injector(NetworkFaults):
    """Runs ``plan`` from ``t0`` (epoch seconds) on ``targets``; see the module docstring."""

    plan: FaultPlan
    targets: Targets
    rng: random.Random
    windows: list[FaultWindow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _mono0: float = 0.0  # the run's start on the monotonic clock

    def start(self, t0: float) -> None:
        """Start one thread per fault; each waits for its time."""
        # Waits run on the monotonic clock: a wall clock that jumps (a VM paused
        # and resumed, NTP) must not shorten or delay the faults.
        self._mono0 = time.monotonic() - (time.time() - t0)
        for fault in self.plan.faults:
            thread = threading.Thread(
                target=self._run, args=(fault, t0), name=f"chaos-{fault.kind}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for every fault to end; True when all did within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def abort(self) -> None:
        """Ask faults that have not started yet not to start (an interrupted run)."""
        self._stop.set()

    def _run(self, fault: Fault, t0: float) -> None:
        if self._stop.wait(max(0.0, self._mono0 + fault.at_s - time.monotonic())):
            return
        action = self.handler(fault.kind)
        start = time.time()
        try:
            detail = action(fault, t0) or ""
        except Exception as exc:  # the run goes on; the report lists the fault as failed
            log.exception("chaos: fault %s at %.1fs failed", fault.kind, fault.at_s)
            with self._lock:
                self.errors.append(f"{fault.kind} at {fault.at_s:g}s: {exc}")
            return
        window = FaultWindow(fault.kind, start, time.time(), detail)
        with self._lock:
            self.windows.append(window)
        log.info("chaos: %s %s", fault.kind, detail)

    def handler(self, kind: str) -> Callable[[Fault, float], str | None]:
        """The method that carries out faults of ``kind``."""
        return getattr(self, f"_{kind}", None) or self.network_handler(kind)

    def _wait_until(self, t0: float, offset_s: float) -> None:
        """Sleep until ``offset_s`` into the run, or less when the run is aborted."""
        self._stop.wait(max(0.0, self._mono0 + offset_s - time.monotonic()))

    # -- kills ----------------------------------------------------------------

    def _kill_role(self, role: str) -> str:
        pid = self.pick_child(role)
        os.kill(pid, signal.SIGKILL)
        return f"kill -9 {role} pid {pid}"

    def _worker_kill(self, fault: Fault, t0: float) -> str:
        return self._kill_role("worker")

    def _poller_kill(self, fault: Fault, t0: float) -> str:
        return self._kill_role("poller")

    def _rpc_server_kill(self, fault: Fault, t0: float) -> str:
        return self._kill_role("rpc_server")

    # -- servers ----------------------------------------------------------------

    def _redis_restart(self, fault: Fault, t0: float) -> str:
        server = self.targets.redis
        if server is None:
            raise RuntimeError("this Redis cannot be restarted")
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()
        server.stop()
        self._wait_until(t0, fault.end_s)
        server.start()
        return f"FLUSHALL, stopped, started empty on port {server.port}"

    def _mariadb_stop(self, fault: Fault, t0: float) -> str:
        server = self.targets.mariadb
        server.stop()
        stopped = time.time()
        self._stop.wait(fault.duration_s)
        server.start()
        return f"stopped {fault.duration_s:g}s (shutdown took {stopped - (t0 + fault.at_s):.1f}s)"

    # -- Action -----------------------------------------------------------------

    def _action_failing(self, fault: Fault, t0: float) -> str:
        self.targets.simulator.configure(fail_rate=1.0)
        self._wait_until(t0, fault.end_s)
        self.targets.simulator.configure(fail_rate=0.0)
        return f"every call failed for {fault.duration_s:g}s; {self._resume_auto_paused()}"

    def _action_slow(self, fault: Fault, t0: float) -> str:
        latency_ms = 2 * self.targets.action_timeout_ms
        self.targets.simulator.configure(latency_ms=latency_ms)
        self._wait_until(t0, fault.end_s)
        self.targets.simulator.configure(latency_ms=0)
        return f"{latency_ms} ms per call for {fault.duration_s:g}s; {self._resume_auto_paused()}"

    def _action_lagging(self, fault: Fault, t0: float) -> str:
        self.targets.simulator.configure(latency_ms=LAGGING_MS)
        self._wait_until(t0, fault.end_s)
        self.targets.simulator.configure(latency_ms=0)
        return f"{LAGGING_MS} ms per call for {fault.duration_s:g}s; {self._resume_auto_paused()}"

    def _action_half_failing(self, fault: Fault, t0: float) -> str:
        self.targets.simulator.configure(fail_rate=HALF)
        self._wait_until(t0, fault.end_s)
        self.targets.simulator.configure(fail_rate=0.0)
        return f"half the calls failed for {fault.duration_s:g}s; {self._resume_auto_paused()}"

    def _action_down(self, fault: Fault, t0: float) -> str:
        gate = self.targets.gate
        if gate is None:
            raise RuntimeError("Action has no gate in front of it to shut")
        gate.shut()
        self._wait_until(t0, fault.end_s)
        gate.open()
        self._stop.wait(RESUME_AFTER_DOWN_S)
        return (
            f"port {gate.port} shut for {fault.duration_s:g}s (connections refused and cut);"
            f" after {RESUME_AFTER_DOWN_S:g}s {self._resume_auto_paused()}"
        )

    def _resume_auto_paused(self) -> str:
        """What an operator does after an Action outage: resume the avatars it auto-paused."""
        if self._stop.is_set():
            return "run aborted: no resume"
        ids = self.targets.auto_paused_ids()
        journal: Journal = self.targets.journal
        with ThreadPoolExecutor(8, thread_name_prefix="chaos-operator") as pool:
            answers = list(pool.map(lambda a: journal.call(RESUME, a, "operator").code, ids))
        return f"operator resumed {answers.count(0)}/{len(ids)} auto-paused avatars"

    # -- the rest ---------------------------------------------------------------

    def _second_supervisor(self, fault: Fault, t0: float) -> str:
        second = self.targets.start_second()
        try:
            second.wait_ready()
            self._wait_until(t0, fault.end_s)
        finally:
            code = second.stop()
        return f"joined for {fault.duration_s:g}s, SIGTERM exit code {code}"

    def _rpc_burst(self, fault: Fault, t0: float) -> str:
        self.targets.burst.burst(BURST_CALLS)
        return f"{BURST_CALLS} calls at once"


def windows_of(windows: Iterable[FaultWindow], wanted: frozenset[str]) -> list[FaultWindow]:
    """The windows whose kind is in ``wanted``, by start time."""
    return sorted((w for w in windows if w.kind in wanted), key=lambda w: w.start)


__all__ = ["FaultWindow", "Injector", "Targets", "children_titled", "kinds", "windows_of"]
