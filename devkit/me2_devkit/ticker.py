"""A call repeated on a background thread until stopped: the samplers of bench and chaos."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    """Calls ``tick`` at once, then every ``interval_s``, on a daemon thread named ``name``,
    until ``stop``."""

    def __init__(self, tick: Callable[[], None], interval_s: float, name: str) -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self, join_s: float) -> None:
        """Ask the thread to end and wait up to ``join_s`` for a tick in progress."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(join_s)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._tick()
            self._stopping.wait(self._interval_s)
