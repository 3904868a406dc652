"""py-spy samples of a running process, summarised as the report's top lines.

``py-spy record --format raw`` writes collapsed stacks (``f1;f2;f3 count``).
py-spy leaves out samples it judges idle, but on this kind of VM it keeps a
thread waiting inside a socket call, so the shares are closer to wall time:
time in ``readinto``/``sendall``-like frames is mostly waiting for the other
side. *Self* is the leaf frame's share, *total* the share of samples with the
function anywhere on the stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_binary() -> str | None:
    """The py-spy executable (next to this interpreter, or on PATH), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    """A py-spy run in the background, writing collapsed stacks to ``path``."""

    proc: subprocess.Popen
    path: Path
    label: str

    def wait(self, timeout_s: float) -> bool:
        """Wait for py-spy to finish; True when it wrote its output."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.path.exists() and self.path.stat().st_size > 0


def record(pid: int, label: str, duration_s: int, out: Path, rate: int = 250) -> Recording | None:
    """Start ``py-spy record`` on ``pid`` for ``duration_s``; None without py-spy."""
    binary = py_spy_binary()
    if binary is None:
        return None
    argv = [binary, "record", "-p", str(pid), "-d", str(duration_s), "-r", str(rate)]
    argv += ["--format", "raw", "--function", "--nonblocking", "-o", str(out)]
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return Recording(proc, out, label)


def _short(frame: str) -> str:
    """``func (/long/path/pkg/mod.py:12)`` → ``func (pkg/mod.py)``."""
    found = FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    parts = found.group("file").split("/")
    return f"{found.group('func')} ({'/'.join(parts[-2:])})"


def summarise(raw: str, top: int = 15) -> tuple[int, list[tuple[str, float, float]]]:
    """Total samples and the ``top`` functions by self share: ``(name, self %, total %)``."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            anywhere[name] += count
    if not samples:
        return 0, []
    rows = [
        (name, 100.0 * n / samples, 100.0 * anywhere[name] / samples)
        for name, n in own.most_common(top)
    ]
    return samples, rows


def render(label: str, samples: int, rows: list[tuple[str, float, float]]) -> str:
    """The summary as a fixed-width text block for the report."""
    lines = [
        f"py-spy, {label}: {samples} samples (socket waits included)",
        f"{'self%':>6} {'total%':>7}  function",
    ]
    lines += [f"{own:6.1f} {total:7.1f}  {name}" for name, own, total in rows]
    return "\n".join(lines)
