"""Watching processes from outside: RSS by process title, CPU seconds from /proc.

The service's children are found by their titles (``me2-scheduler: worker[3]``,
set by the supervisor), so the figures name roles, not PIDs. CPU seconds
(utime + stime) read before and after a run give each process's share of a
dispatch, which is what says where the time of a dispatch goes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from me2_devkit.testing.stack import child_pids
from me2_devkit.ticker import Ticker

TITLE_PREFIX = "me2-scheduler: "
TICKS = os.sysconf("SC_CLK_TCK")


def title(pid: int) -> str:
    """The process title without the prefix (``worker[3]``), or "" when not ours or gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = raw.split(b"\0", 1)[0].decode(errors="replace").strip()
    return text[len(TITLE_PREFIX) :] if text.startswith(TITLE_PREFIX) else ""


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is state (field 3 of stat); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / TICKS


def service_processes(supervisor_pid: int) -> dict[str, int]:
    """``{label: pid}`` of the supervisor and its titled children."""
    found = {"supervisor": supervisor_pid}
    for pid in child_pids(supervisor_pid):
        label = title(pid)
        if label:
            found[label] = pid
    return found


def role_of(label: str) -> str:
    """``worker[3]`` → ``worker``."""
    return label.split("[", 1)[0]


@dataclass
class RssSampler:
    """Samples the service's RSS every ``interval_s`` in a thread; keeps each label's peak."""

    supervisor_pid: int
    interval_s: float = 0.5
    peaks: dict[str, int] = field(default_factory=dict)
    _ticker: Ticker | None = None

    def start(self) -> RssSampler:
        self._ticker = Ticker(self.sample, self.interval_s, "bench-rss").start()
        return self

    def stop(self) -> dict[str, int]:
        """Stop sampling; return the peaks."""
        if self._ticker is not None:
            self._ticker.stop(5)
        return self.peaks

    def sample(self) -> None:
        for label, pid in service_processes(self.supervisor_pid).items():
            rss = rss_bytes(pid)
            if rss > self.peaks.get(label, 0):
                self.peaks[label] = rss


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process now."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_by_role(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed per role."""
    spent: dict[str, float] = {}
    for name, end in after.items():
        role = role_of(name)
        spent[role] = spent.get(role, 0.0) + max(0.0, end - before.get(name, end))
    return spent
