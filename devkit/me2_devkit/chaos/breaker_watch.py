"""The breaker seen from outside: the service's metrics scraped through a chaos run, and (g).

``MetricsWatch`` scrapes the supervisor's ``/metrics`` every half second:
``scheduler_breaker_rejections_total{service="Action"}`` (summed over the
workers, dead ones included: a counter), ``scheduler_action_inflight`` and
``scheduler_action_inflight_limit``. ``breaker_finding`` then checks, for
each time Action was down, that the rejections rose while it was down and
stopped rising soon after it came back (the breaker closed), and stayed flat
until the end of the run.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from me2_devkit.chaos.data import Finding

log = logging.getLogger("me2_devkit.chaos")

REJECTIONS = "scheduler_breaker_rejections"  # the parser drops the counter's _total
IN_FLIGHT = "scheduler_action_inflight"
LIMIT = "scheduler_action_inflight_limit"
SCRAPE_EVERY_S = 0.5
# The breaker closes within this of Action coming back: the channel's
# reconnect backoff (at most 5 s) plus the breaker's 10 s window, by when
# every failure has left it, plus slack for a loaded box and the scrape period
# (a CI run under load saw 15.4 s).
CLOSE_WITHIN_S = 20.0


@dataclass(frozen=True)
class Sample:
    """One scrape: epoch seconds and the three figures (None: the scrape failed)."""

    at: float
    rejections: float
    in_flight: float
    limit: float


def scrape(url: str, timeout_s: float = 2.0) -> Sample | None:
    """The figures at ``url`` now; None when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return None
    values = {REJECTIONS: 0.0, IN_FLIGHT: 0.0, LIMIT: 0.0}
    for family in text_string_to_metric_families(text):
        if family.name not in values:
            continue
        for sample in family.samples:
            if family.name == REJECTIONS and sample.labels.get("service") != "Action":
                continue
            if sample.name.endswith("_created"):
                continue
            values[family.name] += sample.value
    return Sample(time.time(), values[REJECTIONS], values[IN_FLIGHT], values[LIMIT])


@dataclass
class MetricsWatch:
    """Scrapes ``url`` every ``interval_s`` on a thread until stopped."""

    url: str
    interval_s: float = SCRAPE_EVERY_S
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MetricsWatch:
        self._thread = threading.Thread(target=self._loop, name="chaos-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop scraping; the samples, in time order."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return self.samples

    def _loop(self) -> None:
        while not self._stop.is_set():
            sample = scrape(self.url)
            if sample is not None:
                self.samples.append(sample)
            self._stop.wait(self.interval_s)


def _value_at(samples: Sequence[Sample], at: float) -> float:
    """The rejections of the last sample at or before ``at`` (0 before the first)."""
    before = [s.rejections for s in samples if s.at <= at]
    return before[-1] if before else 0.0


def _last_rise(samples: Sequence[Sample], after: float) -> float | None:
    """When the rejections last rose after ``after`` (None: they did not)."""
    last = None
    for previous, sample in itertools.pairwise(samples):
        if sample.at > after and sample.rejections > previous.rejections:
            last = sample.at
    return last


def breaker_finding(
    samples: Sequence[Sample],
    downs: Sequence[tuple[float, float]],
    peak_in_flight: int,
    max_in_flight: int,
) -> Finding:
    """(g): for each (down, back) time, rejections rose while down and stopped soon after.

    ``peak_in_flight`` is the simulator's, ``max_in_flight`` the service's
    setting: both go in the figure.
    """
    violations: list[str] = []
    parts: list[str] = []
    if not samples:
        violations.append("no metrics could be scraped from the service")
    for down, back in downs if samples else ():
        figure, found = _down_and_back(samples, down, back)
        parts.append(figure)
        violations += found
    in_flight = max((s.in_flight for s in samples), default=0.0)
    lowest = min((s.limit for s in samples if s.limit > 0), default=0.0)
    parts.append(
        f"MaxInFlight {max_in_flight}: peak {peak_in_flight} Action calls in flight at the"
        f" simulator, {in_flight:.0f} in the service's gauge; lowest in-flight limit"
        f" {lowest:.0f}"
    )
    title = "the breaker opens while Action is down, closes after"
    return Finding("g", title, "; ".join(parts), violations)


def _down_and_back(samples: Sequence[Sample], down: float, back: float) -> tuple[str, list[str]]:
    """The figure and violations of one time Action was down from ``down`` to ``back``."""
    before, during = _value_at(samples, down), _value_at(samples, back)
    end = samples[-1].at
    closed = _last_rise(samples, back)
    closed_after = 0.0 if closed is None else closed - back
    figure = (
        f"{before:.0f} rejected before Action went down, +{during - before:.0f} in its"
        f" {back - down:.0f} s down; last rise {closed_after:.1f} s after it came back, flat"
        f" for the last {end - (closed or back):.0f} s of the run"
    )
    violations = []
    if during <= before:
        violations.append("the breaker rejected nothing while Action was down")
    if closed_after > CLOSE_WITHIN_S:
        violations.append(
            f"rejections still rose {closed_after:.1f} s after Action came back"
            f" (allowed {CLOSE_WITHIN_S:g} s)"
        )
    if end - back < CLOSE_WITHIN_S + 2 * SCRAPE_EVERY_S:
        violations.append("the run ended too soon after Action came back to see the breaker")
    return figure, violations
