"""The whole service as real processes: simulators and ``me2-scheduler run``.

Shared by the end-to-end tests, the demo, and later the chaos suite and the
benchmark. Every process is a child started here and stopped by its PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from me2_devkit.testing.servers import ServerStartError

PYTHON = sys.executable
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def cli_argv(*args: str) -> list[str]:
    """argv that runs ``me2-scheduler`` with this interpreter."""
    return [PYTHON, "-m", "me2_scheduler.cli", *args]


def dev_argv(*args: str) -> list[str]:
    """argv that runs the dev kit's ``me2-dev`` with this interpreter."""
    return [PYTHON, "-m", "me2_devkit.cli", *args]


@dataclass
class ManagedProcess:
    """A child process with its output in a log file; stopped by PID."""

    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "process not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; return the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_output(self, pattern: str, deadline_s: float = 30.0) -> re.Match:
        """Poll the log until ``pattern`` appears; raise if the process dies first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            found = regex.search(self.output())
            if found:
                return found
            if not self.alive():
                raise ServerStartError(f"{self.argv[3:5]} exited: {self.output()[-2000:]}")
            time.sleep(0.05)
        raise ServerStartError(f"{pattern!r} not seen in {deadline_s}s: {self.output()[-2000:]}")


class ListeningChild:
    """A child process that logs ``listening on HOST:PORT`` (a simulator): started, its
    ``address`` read from its log, stopped by PID. For dataclasses that declare ``root``,
    ``process`` and ``address``."""

    root: Path
    process: ManagedProcess | None
    address: str

    def _launch(self, argv: list[str], log_name: str) -> None:
        """Start ``argv``, its output in ``root/log_name``, and wait for the address it logs."""
        self.process = ManagedProcess(argv, self.root / log_name).start()
        found = self.process.wait_for_output(LISTENING.pattern)
        self.address = f"{found.group(1)}:{found.group(2)}"

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process:
            self.process.stop(10)


@dataclass
class Simulator(ListeningChild):
    """An Action or Diary simulator started through the CLI on a free port."""

    kind: str  # action | diary
    root: Path
    options: tuple[str, ...] = ()
    process: ManagedProcess | None = None
    address: str = ""

    def start(self) -> Simulator:
        argv = dev_argv("simulate", self.kind, "--listen", "127.0.0.1:0", *self.options)
        self._launch(argv, f"{self.kind}-simulator.log")
        return self


@dataclass
class Service:
    """``me2-scheduler run -f CONFIG`` as a real process tree."""

    config_path: Path
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None

    def start(self, name: str = "service") -> Service:
        argv = cli_argv("run", "-f", str(self.config_path))
        self.process = ManagedProcess(argv, self.root / f"{name}.log", env=self.env).start()
        return self

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        """Wait until the gRPC server logs that it is serving."""
        assert self.process is not None
        self.process.wait_for_output(r"rpc_server listening on", deadline_s)

    def children(self) -> list[int]:
        """PIDs whose parent is the supervisor (read from /proc)."""
        assert self.process is not None
        return child_pids(self.process.pid)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        return self.process.stop(timeout_s) if self.process else None


def child_pids(parent: int) -> list[int]:
    """PIDs of live processes whose parent is ``parent`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
