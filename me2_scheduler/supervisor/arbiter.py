"""The supervisor: a pre-fork arbiter in the manner of gunicorn's.

``run_service`` runs the preflight in a short-lived child, forks one child per
role slot, then loops: sleep on a self-pipe, reap (``waitpid(-1, WNOHANG)``
until nothing is left), respawn dead children with per-slot exponential
backoff, and on SIGTERM/SIGINT stop the children stage by stage (poller first,
rpc_server last) within ``Schedule.ShutdownTimeoutSeconds``, then SIGKILL what
remains. Signal handlers only record the signal; ``set_wakeup_fd`` wakes the
loop. No gRPC, Redis or MySQL object is ever created in this process.

``run_service`` exports ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
prometheus_client; ``supervisor.http`` counts restarts, marks reaped children
dead and serves ``/metrics`` and ``/healthz``.

Exit codes: 0 after a shutdown asked for by a signal; the preflight's own code
(1 unreachable, 2 config, 3 cannot boot) when it fails; 3 when a child exits
with ``EXIT_CANNOT_BOOT`` or the metrics port cannot be bound.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from setproctitle import setproctitle

from me2_scheduler.config import Config
from me2_scheduler.logs import setup_logging
from me2_scheduler.supervisor.child import (
    EXIT_CANNOT_BOOT,
    EXIT_FAILURE,
    EXIT_OK,
    PARENT_SIGNALS,
    TITLE_PREFIX,
    ChildContext,
    run_child,
)
from me2_scheduler.supervisor.http import MetricsDir, SupervisorMetrics
from me2_scheduler.supervisor.roles import RoleSpec, check_unique, default_roles

DEFAULT_PREFLIGHT = "me2_scheduler.supervisor.preflight:preflight"
RESTART_DELAY_INITIAL = 0.5  # seconds before the first restart of a slot
RESTART_DELAY_MAX = 30.0  # the doubling stops here
RESTART_HEALTHY_AFTER = 60.0  # a child that ran this long restarts at the initial delay again
LOOP_TICK = 1.0  # longest sleep of the main loop without a signal
PREFLIGHT_CODES = frozenset({1, 2, EXIT_CANNOT_BOOT})  # passed through as the service's exit
QUEUED_SIGNALS_MAX = 5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Per-slot restart delay: ``initial`` doubling up to ``cap``; reset after a healthy run."""

    initial: float = RESTART_DELAY_INITIAL
    cap: float = RESTART_DELAY_MAX
    healthy_after: float = RESTART_HEALTHY_AFTER

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        """The delay before the next restart of a slot whose last delay was ``previous``."""
        if previous is None or ran_for >= self.healthy_after:
            return self.initial
        return min(previous * 2, self.cap)


@dataclass
class _Slot:
    """One child position (``worker[3]``) and the state of its current process."""

    role: RoleSpec
    index: int
    with_context: bool = True
    pid: int | None = None
    started_at: float = 0.0
    delay: float | None = None  # the last restart delay used
    restart_at: float | None = None  # monotonic time of the pending restart
    status: int | None = None  # the last wait status

    @property
    def label(self) -> str:
        return f"{self.role.name}[{self.index}]"


def describe_status(status: int) -> str:
    """``exited with code N`` or ``killed by SIGNAME`` for a ``waitpid`` status."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(signum).name}"
        except ValueError:
            return f"killed by signal {signum}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


@contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the supervisor's signals across a fork so the child cannot run our handlers."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Arbiter:
    """Forks, watches and restarts the children; see the module docstring.

    ``restarts`` counts restarts per role name. ``metrics_dir`` is the
    multiprocess dir already exported (None: no metrics, as in unit tests).
    Must run on the main thread (it installs signal handlers).
    """

    def __init__(
        self,
        config: Config,
        roles: Sequence[RoleSpec],
        *,
        backoff: Backoff | None = None,
        tick: float = LOOP_TICK,
        metrics_dir: str | None = None,
    ) -> None:
        check_unique(roles)
        self.config = config
        self.backoff = backoff or Backoff()
        self.tick = tick
        self.restarts: Counter[str] = Counter()
        self._slots = [_Slot(role, i) for role in roles for i in range(role.count)]
        self._by_pid: dict[int, _Slot] = {}
        self._signals: list[int] = []
        self._respawn = False  # True only while serving: children that die are restarted
        self._halt_code: int | None = None
        self._pipe: tuple[int, int] = (-1, -1)
        self._saved: dict[int, object] = {}
        self._saved_wakeup = -1
        self.observer = SupervisorMetrics(metrics_dir)
        self._stopping = False

    def run(self, preflight: str | None) -> int:
        """Preflight, start every child, serve until stopped; return the exit code."""
        setproctitle(f"{TITLE_PREFIX}supervisor")
        self._install_signals()
        try:
            roles = {slot.role.name for slot in self._slots}
            if not self.observer.start(self.config.prometheus, roles, self.health_problems):
                return EXIT_CANNOT_BOOT
            if preflight is not None:
                code = self._run_preflight(preflight)
                if code is not None:
                    return code
            for slot in self._slots:
                self._spawn(slot)
            self._respawn = True
            return self._serve()
        except BaseException:
            self._kill(list(self._by_pid.values()), signal.SIGKILL)
            self._final_reap()
            raise
        finally:
            self.observer.close()
            self._restore_signals()

    # --- metrics and health ---------------------------------------------------

    def health_problems(self) -> list[str]:
        """What makes ``/healthz`` answer 503: starting, stopping, or the slots that are down."""
        if not self._respawn:
            return ["stopping" if self._stopping else "starting"]
        down = [slot.label for slot in list(self._slots) if slot.pid is None]
        return [f"down: {', '.join(down)}"] if down else []

    def _on_child_restart(self, role: str) -> None:
        """Called once per restart of a ``role`` child (``restarts`` already counts it)."""
        self.observer.child_restarted(role)

    def _on_child_reaped(self, pid: int) -> None:
        """Called for every reaped child: forget its live gauges in the multiprocess dir."""
        self.observer.child_reaped(pid)

    # --- signals -----------------------------------------------------------

    def _install_signals(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._saved_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in PARENT_SIGNALS:
            handler = self._on_sigchld if signum == signal.SIGCHLD else self._on_signal
            self._saved[signum] = signal.signal(signum, handler)

    def _restore_signals(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._saved_wakeup)
        for fd in self._pipe:
            with suppress(OSError):
                os.close(fd)

    def _on_signal(self, signum: int, frame: object) -> None:
        """Record a stop signal; nothing else happens in a handler."""
        if len(self._signals) < QUEUED_SIGNALS_MAX:
            self._signals.append(signum)

    def _on_sigchld(self, signum: int, frame: object) -> None:
        """Nothing to do: the wakeup fd already woke the loop, which reaps."""

    def _pop_signal(self) -> int | None:
        return self._signals.pop(0) if self._signals else None

    def _sleep(self, seconds: float) -> None:
        """Wait for a signal (the self-pipe becomes readable) or ``seconds``."""
        read_fd = self._pipe[0]
        select.select([read_fd], [], [], max(0.0, seconds))
        with suppress(BlockingIOError):
            while os.read(read_fd, 512):
                pass

    # --- children ------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        """Fork the child for ``slot``; on fork failure schedule a retry with backoff."""
        parent_pid = os.getpid()
        with _signals_blocked():
            try:
                pid = os.fork()
            except OSError as exc:
                self._schedule_restart(slot, f"could not fork ({exc})")
                return
            if pid == 0:
                ctx = ChildContext(slot.role.name, slot.index, ppid=parent_pid)
                run_child(
                    ctx,
                    slot.role.target,
                    self.config,
                    inherited_fds=self._pipe,
                    with_context=slot.with_context,
                )
        slot.pid, slot.started_at, slot.restart_at = pid, time.monotonic(), None
        self._by_pid[pid] = slot
        log.info("started %s pid %d", slot.label, pid)

    def _reap(self) -> None:
        """Collect every child that has exited, without blocking."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self._by_pid.pop(pid, None)
            if slot is not None:
                self._on_exit(slot, pid, status)

    def _on_exit(self, slot: _Slot, pid: int, status: int) -> None:
        slot.pid, slot.status = None, status
        self._on_child_reaped(pid)
        what = describe_status(status)
        if not self._respawn:
            log.info("%s pid %d %s", slot.label, pid, what)
        elif os.waitstatus_to_exitcode(status) == EXIT_CANNOT_BOOT:
            log.error("%s pid %d cannot boot (%s); stopping the service", slot.label, pid, what)
            self._halt_code = EXIT_CANNOT_BOOT
        else:
            self._schedule_restart(slot, f"pid {pid} {what}")

    def _schedule_restart(self, slot: _Slot, reason: str) -> None:
        now = time.monotonic()
        slot.delay = self.backoff.next_delay(slot.delay, now - slot.started_at)
        slot.restart_at = now + slot.delay
        self.restarts[slot.role.name] += 1
        log.error("%s %s; restarting in %gs", slot.label, reason, slot.delay)
        self._on_child_restart(slot.role.name)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.pid is None and slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    def _next_timeout(self) -> float:
        now = time.monotonic()
        pending = [s.restart_at - now for s in self._slots if s.restart_at is not None]
        return min([self.tick, *pending])

    # --- phases ------------------------------------------------------------

    def _run_preflight(self, target: str) -> int | None:
        """Run the preflight child to its end; None means go on, else the exit code."""
        slot = _Slot(RoleSpec("preflight", target, 1), 0, with_context=False)
        self._spawn(slot)
        while slot.pid is not None:
            if self._pop_signal() is not None:
                return self._shutdown([slot], quick=False)
            self._reap()
            if slot.pid is not None:
                self._sleep(self.tick)
        if slot.status is not None and os.waitstatus_to_exitcode(slot.status) == 0:
            return None
        code = EXIT_FAILURE if slot.status is None else os.waitstatus_to_exitcode(slot.status)
        code = code if code in PREFLIGHT_CODES else EXIT_FAILURE
        log.error("preflight failed; not starting the service (exit %d)", code)
        return code

    def _serve(self) -> int:
        """The main loop: signals, reaping, restarts, until a stop signal or a halt."""
        while True:
            signum = self._pop_signal()
            if signum is not None:
                return self._shutdown(self._slots, quick=signum == signal.SIGQUIT)
            self._reap()
            if self._halt_code is not None:
                self._shutdown(self._slots, quick=False)
                return self._halt_code
            self._respawn_due()
            self._sleep(self._next_timeout())

    def _shutdown(self, slots: Sequence[_Slot], *, quick: bool) -> int:
        """Stop ``slots`` (TERM by stage, or KILL at once if ``quick``), reap all; return 0."""
        self._respawn, self._stopping = False, True
        log.info("shutting down%s", " now" if quick else "")
        if not quick:
            self._drain(slots)
        leftover = [s for s in slots if s.pid is not None]
        if leftover:
            log.error("killing %s", ", ".join(s.label for s in leftover))
            self._kill(leftover, signal.SIGKILL)
        self._final_reap()
        log.info("stopped")
        return EXIT_OK

    def _drain(self, slots: Sequence[_Slot]) -> None:
        """SIGTERM each stop stage in turn and wait for it, within the one shutdown budget."""
        deadline = time.monotonic() + self.config.schedule.shutdown_timeout_seconds
        for order in sorted({s.role.stop_order for s in slots}):
            stage = [s for s in slots if s.role.stop_order == order and s.pid is not None]
            self._kill(stage, signal.SIGTERM)
            if not self._wait_stopped(stage, deadline):
                return

    def _wait_stopped(self, stage: list[_Slot], deadline: float) -> bool:
        """Reap until ``stage`` is gone (True), the deadline passes or a second signal (False)."""
        while True:
            self._reap()
            if all(s.pid is None for s in stage):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                budget = self.config.schedule.shutdown_timeout_seconds
                log.error("shutdown timeout (%gs) reached", budget)
                return False
            if self._pop_signal() is not None:
                log.warning("second stop signal; not waiting any longer")
                return False
            self._sleep(min(remaining, self.tick))

    def _kill(self, slots: Sequence[_Slot], signum: int) -> None:
        for slot in slots:
            if slot.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _final_reap(self) -> None:
        """Wait (blocking) for every child still known; they have all been signalled."""
        while self._by_pid:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            slot = self._by_pid.pop(pid, None)
            if slot is not None:
                self._on_exit(slot, pid, status)
        self._by_pid.clear()


def run_service(
    config: Config,
    roles: Sequence[RoleSpec] | None = None,
    preflight: str | None = DEFAULT_PREFLIGHT,
    *,
    backoff: Backoff | None = None,
) -> int:
    """Run the supervisor until it is stopped; return the process exit code.

    ``roles`` defaults to ``default_roles(config)``; ``preflight`` is a
    ``"module:function"`` called as ``f(config) -> int`` in a child before any
    role starts (None skips it). Must be called on the main thread, before
    this process imports prometheus_client. Raises ``ValueError`` for
    duplicate role names, ``ConfigError`` for an invalid ``Log`` section and
    ``OSError`` when the metrics dir cannot be made; every other failure is
    an exit code (3 when the metrics port cannot be bound).
    """
    setup_logging(config.log, "supervisor", timezone=config.timezone)
    metrics_dir = MetricsDir.create()  # before anything imports prometheus_client
    try:
        arbiter = Arbiter(
            config,
            default_roles(config) if roles is None else roles,
            backoff=backoff,
            metrics_dir=str(metrics_dir.path),
        )
        return arbiter.run(preflight)
    finally:
        metrics_dir.remove()
