"""The supervisor: a pre-fork arbiter in the manner of gunicorn's.

``run_service`` runs the preflight in a short-lived child, forks one child per
role slot, then loops: sleep on a self-pipe, reap (``waitpid(-1, WNOHANG)``
until nothing is left), respawn dead children with per-slot exponential
backoff, and on SIGTERM/SIGINT stop the children stage by stage (poller first,
rpc_server last) within ``Schedule.ShutdownTimeoutSeconds``, then SIGKILL what
remains. Signal handlers only record the signal; ``set_wakeup_fd`` wakes the
loop. No gRPC, Redis or MySQL object is ever created in this process.

``run_service`` exports ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
prometheus_client, and the dir children report their health in (``health``);
``supervisor.http`` counts restarts, marks reaped children dead and serves
``/metrics`` and ``/healthz``. Which slot holds which pid,
the backoff and the stop stages are plain bookkeeping in ``supervisor.slots``.

Exit codes: 0 after a shutdown asked for by a signal; the preflight's own code
(1 unreachable, 2 config, 3 cannot boot) when it fails; 3 when a child exits
with ``EXIT_CANNOT_BOOT`` or the metrics port cannot be bound.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from setproctitle import setproctitle

from me2_scheduler import health
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
from me2_scheduler.supervisor.slots import Backoff, Slot, SlotTable, describe_status, stop_stages

DEFAULT_PREFLIGHT = "me2_scheduler.supervisor.preflight:preflight"
LOOP_TICK = 1.0  # longest sleep of the main loop without a signal
PREFLIGHT_CODES = frozenset({1, 2, EXIT_CANNOT_BOOT})  # passed through as the service's exit
QUEUED_SIGNALS_MAX = 5

log = logging.getLogger(__name__)


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
        health_dir: Path | None = None,
    ) -> None:
        check_unique(roles)
        self.config = config
        self.tick = tick
        self._health_dir = health_dir
        self._table = SlotTable(roles, backoff or Backoff())
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
            roles = self._table.role_names
            if not self.observer.start(
                self.config.prometheus, roles, self.health_problems, self.config.console
            ):
                return EXIT_CANNOT_BOOT
            if preflight is not None:
                code = self._run_preflight(preflight)
                if code is not None:
                    return code
            for slot in self._table.slots:
                self._spawn(slot)
            self._respawn = True
            return self._serve()
        except BaseException:
            self._kill(self._table.live(), signal.SIGKILL)
            self._final_reap()
            raise
        finally:
            self.observer.close()
            self._restore_signals()

    @property
    def restarts(self) -> Counter[str]:
        """Restarts so far, per role name."""
        return self._table.restarts

    # --- metrics and health ---------------------------------------------------

    def health_problems(self) -> list[str]:
        """What ``/healthz`` lists, one line each; any but ``degraded: ...`` makes it 503.

        Starting or stopping; the slots without a process; a server not
        listening yet; the dependencies the children report down or degraded.
        Runs on the HTTP thread: reads the slot table and the children's files.
        """
        if not self._respawn:
            return ["stopping" if self._stopping else "starting"]
        down = self._table.down()
        return ([f"down: {', '.join(down)}"] if down else []) + self._children_health()

    def _children_health(self) -> list[str]:
        if self._health_dir is None:  # an Arbiter without run_service: nothing reported
            return []
        lines, reports = [], {}
        for slot in list(self._table.slots):
            pid = slot.pid  # read once: the main loop may change it meanwhile
            if pid is None:
                continue
            report = health.read_report(self._health_dir, pid)
            if slot.role.announces_listening and (report is None or not report.listening):
                lines.append(f"starting: {slot.label} is not listening yet")
            if report is not None:
                reports[slot.label] = report
        return lines + health.dependency_lines(reports, time.time())

    def _on_child_restart(self, role: str) -> None:
        """Called once per restart of a ``role`` child (``restarts`` already counts it)."""
        self.observer.child_restarted(role)

    def _on_child_reaped(self, pid: int) -> None:
        """Called for every reaped child: forget its live gauges and its health report."""
        self.observer.child_reaped(pid)
        if self._health_dir is not None:
            health.forget(self._health_dir, pid)

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

    def _spawn(self, slot: Slot) -> None:
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
        self._table.started(slot, pid, time.monotonic())
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
            self._on_exit(pid, status)

    def _on_exit(self, pid: int, status: int) -> None:
        """Log a reaped child; restart its slot with backoff, or halt when it cannot boot."""
        slot = self._table.exited(pid, status)
        if slot is None:
            return
        self._on_child_reaped(pid)
        what = describe_status(status)
        if not self._respawn:
            log.info("%s pid %d %s", slot.label, pid, what)
        elif os.waitstatus_to_exitcode(status) == EXIT_CANNOT_BOOT:
            log.error("%s pid %d cannot boot (%s); stopping the service", slot.label, pid, what)
            self._halt_code = EXIT_CANNOT_BOOT
        else:
            self._schedule_restart(slot, f"pid {pid} {what}")

    def _schedule_restart(self, slot: Slot, reason: str) -> None:
        delay = self._table.schedule_restart(slot, time.monotonic())
        log.error("%s %s; restarting in %gs", slot.label, reason, delay)
        self._on_child_restart(slot.role.name)

    # --- phases ------------------------------------------------------------

    def _run_preflight(self, target: str) -> int | None:
        """Run the preflight child to its end; None means go on, else the exit code."""
        slot = Slot(RoleSpec("preflight", target, 1), 0, with_context=False)
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
                return self._shutdown(self._table.slots, quick=signum == signal.SIGQUIT)
            self._reap()
            if self._halt_code is not None:
                self._shutdown(self._table.slots, quick=False)
                return self._halt_code
            for slot in self._table.due(time.monotonic()):
                self._spawn(slot)
            self._sleep(self._table.next_timeout(time.monotonic(), self.tick))

    def _shutdown(self, slots: Sequence[Slot], *, quick: bool) -> int:
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

    def _drain(self, slots: Sequence[Slot]) -> None:
        """SIGTERM each stop stage in turn and wait for it, within the one shutdown budget."""
        deadline = time.monotonic() + self.config.schedule.shutdown_timeout_seconds
        for stage in stop_stages(slots):
            self._kill(stage, signal.SIGTERM)
            if not self._wait_stopped(stage, deadline):
                return

    def _wait_stopped(self, stage: list[Slot], deadline: float) -> bool:
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

    def _kill(self, slots: Sequence[Slot], signum: int) -> None:
        for slot in slots:
            if slot.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _final_reap(self) -> None:
        """Wait (blocking) for every child still known; they have all been signalled."""
        while self._table.live():
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self._on_exit(pid, status)
        self._table.forget_all()


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
    health_dir = health.prepare_dir(metrics_dir.path)  # exported before the first fork
    try:
        arbiter = Arbiter(
            config,
            default_roles(config) if roles is None else roles,
            backoff=backoff,
            metrics_dir=str(metrics_dir.path),
            health_dir=health_dir,
        )
        return arbiter.run(preflight)
    finally:
        shutil.rmtree(health_dir, ignore_errors=True)
        metrics_dir.remove()
