"""The dev kit's Ticker: ticks at once, then on its interval, and never after ``stop``."""

from __future__ import annotations

import threading

from me2_devkit.ticker import Ticker

from .support import wait_until


def test_a_ticker_ticks_at_once_and_again_until_stopped() -> None:
    ticks: list[str] = []
    ticker = Ticker(lambda: ticks.append(threading.current_thread().name), 0.01, "test-tick")

    ticker.start()
    wait_until(lambda: len(ticks) >= 3, 10, "three ticks")
    ticker.stop(5)

    assert set(ticks) == {"test-tick"}  # on the ticker's own thread
    assert not ticker._thread.is_alive()  # so no tick can come after stop


def test_a_long_interval_still_gives_the_first_tick_and_stop_does_not_wait_it_out() -> None:
    ticked = threading.Event()
    ticker = Ticker(ticked.set, 3600, "test-tick").start()

    assert ticked.wait(10)
    ticker.stop(10)
    assert not ticker._thread.is_alive()


def test_stopping_a_ticker_never_started_is_harmless() -> None:
    Ticker(lambda: None, 1, "test-tick").stop(1)
