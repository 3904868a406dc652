"""What runs in a forked child: set up the process, call the role's target, exit.

Exit codes are a contract with the supervisor:

- ``0`` — the role returned (normally because it was asked to stop);
- ``EXIT_FAILURE`` (1) — the role crashed (uncaught exception, logged with its
  traceback); the supervisor restarts it with backoff;
- ``EXIT_CANNOT_BOOT`` (3) — the role can never work as configured (its module
  does not import, a ``ConfigError``, or it returned 3 itself because, say,
  the schema is behind). Restarting would only spin, so the supervisor stops
  the whole service and exits 3.

A child never outlives the supervisor: ``PR_SET_PDEATHSIG`` makes Linux send
it SIGKILL when the supervisor dies, even by ``kill -9``; a watchdog thread
that sees ``os.getppid()`` change is the portable fallback.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn

from setproctitle import setproctitle

from me2_scheduler.config import Config
from me2_scheduler.errors import ConfigError
from me2_scheduler.logs import setup_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CANNOT_BOOT = 3

TITLE_PREFIX = "me2-scheduler: "
WATCH_INTERVAL_SECONDS = 0.5  # how often the watchdog checks the parent
ORPHAN_GRACE_SECONDS = 1.0  # time an orphan gets to finish after ctx.stop, then hard exit

# Signals the supervisor handles itself; a child puts its own dispositions in place.
PARENT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD)
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
_PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


@dataclass
class ChildContext:
    """What a role's target gets besides the config: who it is, and when to stop."""

    role: str
    index: int
    stop: threading.Event = field(default_factory=threading.Event)
    ppid: int = 0

    @property
    def label(self) -> str:
        """``role[index]``, as in process titles and the supervisor's log lines."""
        return f"{self.role}[{self.index}]"

    @property
    def stopping(self) -> bool:
        """True once SIGTERM/SIGINT arrived or the supervisor is gone."""
        return self.stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on stop; return True if stopping."""
        return self.stop.wait(seconds)


def load_target(target: str) -> Callable[..., Any]:
    """Import ``"module:function"``; raise ImportError, AttributeError or ValueError."""
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise ValueError(f"target must be 'module:function', not {target!r}")
    return getattr(importlib.import_module(module_name), name)


def run_child(
    ctx: ChildContext,
    target: str,
    config: Config,
    *,
    inherited_fds: Sequence[int] = (),
    with_context: bool = True,
) -> NoReturn:
    """Run in a freshly forked child: boot, call ``target``, and ``os._exit`` with its code.

    ``with_context=True`` calls ``target(config, ctx)`` and turns SIGTERM/SIGINT
    into ``ctx.stop``; ``False`` (the preflight) calls ``target(config)`` and
    leaves SIGTERM/SIGINT fatal. Expects the supervisor's stop signals blocked
    (they are unblocked once the child's handlers are in place, so none is
    lost). Never returns and never raises.
    """
    code = EXIT_FAILURE
    try:
        wake_fd = _boot(ctx, config, inherited_fds, with_context)
        threading.Thread(
            target=_watchdog, args=(ctx, wake_fd), name="parent-watchdog", daemon=True
        ).start()
        code = _call_target(target, config, ctx, with_context)
    except BaseException:  # a child must reach os._exit whatever happens
        traceback.print_exc()
        code = EXIT_CANNOT_BOOT
    finally:
        _exit(code)


def _boot(
    ctx: ChildContext, config: Config, inherited_fds: Sequence[int], with_context: bool
) -> int:
    """Make this process a child: death signal, fds, signals, title, logging. Return wake fd."""
    _set_parent_death_signal()
    if os.getppid() != ctx.ppid:  # the supervisor died before prctl took effect
        _exit(EXIT_OK)
    wake_fd = _install_signals(with_context)  # first: the old wakeup fd is among inherited_fds
    for fd in inherited_fds:
        with suppress(OSError):
            os.close(fd)
    setproctitle(f"{TITLE_PREFIX}{ctx.label}")
    setup_logging(config.log, ctx.label, timezone=config.timezone)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_SIGNALS)
    return wake_fd


def _install_signals(with_context: bool) -> int:
    """Reset the supervisor's handlers; route stop signals to a pipe the watchdog reads.

    The handler itself does nothing: ``set_wakeup_fd`` writes the signal number
    to the pipe at C level, and the watchdog thread sets ``ctx.stop``. Setting a
    ``threading.Event`` inside a Python signal handler can deadlock, because the
    handler runs on the main thread, possibly while that thread holds the
    event's lock inside ``ctx.wait()``.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in PARENT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    if with_context:
        for signum in STOP_SIGNALS:
            signal.signal(signum, _note_signal)
    return read_fd


def _note_signal(signum: int, frame: object) -> None:
    """Python-level handler for stop signals; the wakeup fd carries the news."""


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when the supervisor's forking thread dies."""
    if not sys.platform.startswith("linux"):
        return
    with suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


def _watchdog(ctx: ChildContext, wake_fd: int) -> None:
    """Turn stop signals into ``ctx.stop``; exit this process if the supervisor is gone."""
    while True:
        readable, _, _ = select.select([wake_fd], [], [], WATCH_INTERVAL_SECONDS)
        if readable and STOP_SIGNALS.intersection(_drain(wake_fd)):
            ctx.stop.set()
        if os.getppid() != ctx.ppid:
            ctx.stop.set()
            log.error("%s: supervisor %d is gone; exiting", ctx.label, ctx.ppid)
            time.sleep(ORPHAN_GRACE_SECONDS)  # the main thread may exit cleanly meanwhile
            _exit(EXIT_OK)


def _drain(fd: int) -> bytes:
    """Read everything waiting on a non-blocking fd."""
    chunks = []
    with suppress(BlockingIOError):
        while chunk := os.read(fd, 512):
            chunks.append(chunk)
    return b"".join(chunks)


def _call_target(target: str, config: Config, ctx: ChildContext, with_context: bool) -> int:
    """Import and call the role's target; map its outcome to an exit code."""
    try:
        function = load_target(target)
    except (ImportError, AttributeError, ValueError):
        log.exception("%s cannot load %s; it cannot boot", ctx.label, target)
        return EXIT_CANNOT_BOOT
    try:
        result = function(config, ctx) if with_context else function(config)
    except ConfigError as exc:
        log.error("%s config error: %s", ctx.label, exc)
        return EXIT_CANNOT_BOOT
    except SystemExit as exc:
        return _system_exit_code(exc)
    except Exception as exc:
        log.exception("%s crashed: %s: %s", ctx.label, type(exc).__name__, exc)
        return EXIT_FAILURE
    return EXIT_OK if result is None else int(result)


def _system_exit_code(exc: SystemExit) -> int:
    """The exit code ``sys.exit(arg)`` means, as the interpreter would compute it."""
    if exc.code is None:
        return EXIT_OK
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return EXIT_FAILURE


def _exit(code: int) -> NoReturn:
    """Flush logs and stdio, then leave without running the parent's atexit/finally code."""
    for handler in logging.getLogger().handlers:
        with suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)
