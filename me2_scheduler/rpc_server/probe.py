"""The rpc_server's watch on MySQL and Redis, reported to the supervisor's ``/healthz``.

Every ``PROBE_INTERVAL_S`` the rpc_server pings MySQL (``SELECT 1`` through
its pool) and Redis (``PING``) and reports each ``ok`` or ``down`` with the
driver's reason (see ``health``). A ping still unanswered after
``PROBE_TIMEOUT_S`` is reported down at once ("no answer within 3 s"), without
waiting for the driver's own timeout, so a blackholed server shows in
``/healthz`` within seconds.

Why here: the supervisor may hold no connection (DESIGN §1), the rpc_server
already holds a store and an index, and what ``/healthz`` answers is whether
the service can serve its API. One ping each a second costs the servers
nothing; ``/healthz`` itself only reads the result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from me2_scheduler import health
from me2_scheduler.health import State

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 3.0
WATCH_TICK_S = 0.25

log = logging.getLogger("me2_scheduler.rpc")


class DependencyProbe:
    """Pings each of ``checks`` (dependency name → a call that raises when it is down).

    One thread per check, so a ping that hangs delays no other, and one that
    reports a ping running longer than ``timeout_s``.
    """

    def __init__(
        self,
        checks: Mapping[str, Callable[[], object]],
        *,
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._checks = dict(checks)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._running_since: dict[str, float | None] = dict.fromkeys(self._checks)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start pinging in the background (daemon threads)."""
        for name in self._checks:
            self._spawn(f"probe-{name}", self._loop, name)
        self._spawn("probe-watch", self._watch)

    def stop(self) -> None:
        """Stop pinging; a ping in progress is left to end on its own."""
        self._stop.set()

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _loop(self, name: str) -> None:
        while not self._stop.is_set():
            self._running_since[name] = time.monotonic()
            try:
                self._checks[name]()
            except Exception as exc:  # any failure of the ping is the answer we report
                self._running_since[name] = None
                self._report(name, State.DOWN, str(exc) or type(exc).__name__)
            else:
                self._running_since[name] = None
                self._report(name, State.OK)
            self._stop.wait(self._interval_s)

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_TICK_S):
            now = time.monotonic()
            for name, since in list(self._running_since.items()):
                if since is not None and now - since > self._timeout_s:
                    self._report(name, State.DOWN, f"no answer within {self._timeout_s:g} s")

    def _report(self, name: str, state: State, reason: str = "") -> None:
        if state is State.DOWN and not self._stop.is_set():
            log.debug("health: %s is down: %s", name, reason)
        health.report(name, "probe", state, reason)
