"""The chaos run's Action: the Action simulator, also noting when each key arrived.

The audit needs Action's own clock: a history row's times are stamped by
whichever host recorded it (a skewed one, in a clock-skew fault), while the
moment a call reached Action is a server-side fact. This simulator counts
exactly as ``ActionSimulator`` does and also keeps the arrival time (this
host's clock, which no fault skews) of every call per idempotency key. On
SIGUSR1 it writes them as JSON (``{key: [epoch seconds, ...]}``) to the file
given by ``--times``, replacing it atomically, so the runner can read them
while the simulator still runs.

Run as ``python -m me2_devkit.chaos.clocked_action --listen HOST:PORT
--times PATH [--seed N]``; it prints the simulator's usual listening line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import click

from me2_devkit.simulate_cli import run_until_signalled
from me2_devkit.simulators import ActionSimulator

TIMES = "Where SIGUSR1 writes the arrival times per key."


class ClockedActionSimulator(ActionSimulator):
    """``ActionSimulator`` plus the arrival times of each key's calls."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.arrivals: dict[str, list[float]] = defaultdict(list)

    def _count(self, avatar_id: int, key: str) -> None:
        now = time.time()
        super()._count(avatar_id, key)
        if key:
            with self._lock:
                self.arrivals[key].append(now)

    def write_arrivals(self, path: Path) -> None:
        """Write the arrival times to ``path`` atomically. Raises OSError."""
        with self._lock:
            payload = json.dumps(self.arrivals)
        partial = path.with_suffix(".partial")
        partial.write_text(payload, encoding="utf-8")
        os.replace(partial, path)


def _dump_on_usr1(simulator: ClockedActionSimulator, path: Path) -> None:
    """Write the times whenever SIGUSR1 arrives; the handler only wakes this thread."""
    wanted = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: wanted.set())

    def loop() -> None:
        while True:
            wanted.wait()
            wanted.clear()
            try:
                simulator.write_arrivals(path)
            except OSError as exc:
                print(f"error: cannot write {path}: {exc}", file=sys.stderr, flush=True)

    threading.Thread(target=loop, name="arrivals", daemon=True).start()


@click.command()
@click.option("--listen", default="127.0.0.1:0", show_default=True, help="host:port")
@click.option("--times", "times_path", type=click.Path(dir_okay=False), required=True, help=TIMES)
@click.option("--seed", type=int, default=None)
def main(listen: str, times_path: str, seed: int | None) -> None:
    """Serve action.Action/ScheduleAction until SIGTERM, noting arrival times per key."""
    simulator = ClockedActionSimulator(seed)
    _dump_on_usr1(simulator, Path(times_path))
    run_until_signalled(simulator, listen)


if __name__ == "__main__":
    main()
