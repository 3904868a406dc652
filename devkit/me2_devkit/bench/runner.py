"""Runs the chosen scenarios ``runs`` times on one set of servers and collects the figures.

Runs are interleaved (limits, bursts, steady, the latency table; then
again) so that a noisy minute on a shared box spreads over all figures
instead of spoiling one. The latency table, with its many cells, runs in the
first ``Sizes.latency_runs`` rounds only.
Scale loads each size once and repeats each operation ``runs`` times on it.
One extra 0 ms burst runs under py-spy for the profile, outside the medians.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from me2_devkit.bench import latency, profile, scenarios
from me2_devkit.bench.anatomy import anatomy
from me2_devkit.bench.console import console_pages
from me2_devkit.bench.env import (
    Servers,
    box_busy_seconds,
    load_average,
    machine,
    own_cpu_seconds,
    versions,
)
from me2_devkit.bench.limits import limits
from me2_devkit.bench.report import Results, cpu_ceiling, derive
from me2_devkit.bench.scale import scale
from me2_devkit.bench.scenarios import FULL, Sizes
from me2_devkit.bench.tables import num
from me2_scheduler.config import ScheduleConf

SCENARIOS = ("burst", "steady", "latency", "scale", "footprint", "limits", "console")
_YAML_KEYS = {
    "max_workers": "MaxWorkers",
    "poll_interval": "PollInterval",
    "claim_batch": "ClaimBatch",
    "dispatch_batch": "DispatchBatch",
    "max_in_flight": "MaxInFlight",
    "lease_seconds": "LeaseSeconds",
    "scan_interval": "ScanInterval",
}


@dataclass
class Plan:
    """What to run: scenarios, how often, how big, and ``Schedule`` overrides for the service."""

    runs: int = 3
    sizes: Sizes = FULL
    scenarios: tuple[str, ...] = SCENARIOS
    schedule: dict[str, Any] = field(default_factory=dict)
    profile: bool = True
    echo: Callable[[str], None] = print

    def wants(self, *names: str) -> bool:
        return any(name in self.scenarios for name in names)

    def service_schedule(self) -> dict[str, Any]:
        """The ``Schedule`` section the service runs with: MaxWorkers, then the overrides."""
        return {"MaxWorkers": self.sizes.workers, **self.schedule}

    def settings(self) -> dict[str, str]:
        """The effective ``Schedule`` values, for the report."""
        defaults = ScheduleConf()
        chosen = self.service_schedule()
        settings = {
            key: str(chosen.get(key, getattr(defaults, attr))) for attr, key in _YAML_KEYS.items()
        }
        if settings["MaxInFlight"] == "0":  # 0 means one call per worker, the seed's
            settings["MaxInFlight"] = settings["MaxWorkers"]
        runs = {"runs": str(self.runs)}
        if self.wants("latency"):
            runs["latency runs"] = str(min(self.runs, self.sizes.latency_runs))
        return settings | runs


def run(plan: Plan, servers: Servers | None = None, root: Path | None = None) -> Results:
    """Run ``plan``; with no ``servers`` start (and stop) the benchmark's own.

    Raises ServerStartError, StoreError, RedisIndexError when a part fails.
    """
    results = Results(load_before=load_average(), machine=machine(), settings=plan.settings())
    began, box_before, own_before = time.monotonic(), box_busy_seconds(), own_cpu_seconds()
    own = servers is None
    servers = servers or Servers.start(root)
    try:
        results.versions = versions(servers)
        for number in range(1, plan.runs + 1):
            _one_round(plan, servers, results, number)
        if plan.wants("scale"):
            for count in plan.sizes.scale_counts:
                plan.echo(f"scale: {count:,} avatars")
                results.add(scale(servers, count, plan.runs))
        if plan.wants("console"):
            plan.echo(f"console: pages with {plan.sizes.console_count:,} avatars")
            results.add(console_pages(servers, plan.sizes.console_count, plan.runs))
        if plan.profile and plan.sizes.profile_seconds > 0 and plan.wants("burst", "footprint"):
            _profile(plan, servers, results)
        derive(results)
        results.notes.insert(0, cpu_note(results))
        if plan.wants("latency"):
            results.notes[1:1] = [
                note
                for max_in_flight in plan.sizes.latency_in_flight
                for latency_ms in plan.sizes.latency_ms
                if max_in_flight != min(plan.sizes.latency_in_flight)
                and (note := latency.bound_note(results, max_in_flight, latency_ms))
            ]
    finally:
        results.load_after = load_average()
        results.seconds = time.monotonic() - began
        if own:
            servers.stop()
        # after the stop, so the servers' CPU is counted as ours (reaped children)
        box, mine = box_busy_seconds() - box_before, own_cpu_seconds() - own_before
        results.other_cpu_seconds = max(0.0, box - mine)
    return results


def _one_round(plan: Plan, servers: Servers, results: Results, number: int) -> None:
    sizes = plan.sizes
    if plan.wants("limits"):
        plan.echo(f"run {number}: limits")
        results.add(limits(servers, sizes.limit_processes, sizes.limit_seconds))
        results.add(anatomy(servers, sizes.anatomy_dispatches))
    if plan.wants("burst", "footprint"):
        _bursts(plan, servers, results, number)
    if plan.wants("steady"):
        _steadies(plan, servers, results, number)
    if plan.wants("latency") and number <= sizes.latency_runs:
        box_rate = results.get("burst.0ms.rate")
        schedule = plan.service_schedule()
        results.add(latency.run_cells(servers, sizes, schedule, plan.echo, box_rate))


def _bursts(plan: Plan, servers: Servers, results: Results, number: int) -> None:
    sizes, schedule = plan.sizes, plan.service_schedule()
    latencies = sizes.burst_latencies_ms if plan.wants("burst") else (0,)
    for latency_ms in latencies:
        plan.echo(f"run {number}: burst of {sizes.burst_avatars:,}, Action {latency_ms} ms")
        figures, _ = scenarios.burst(servers, sizes, latency_ms, schedule)
        results.add(figures)
        plan.echo("  " + _headline(figures, f"burst.{latency_ms}ms.rate", "dispatches/s"))


def _steadies(plan: Plan, servers: Servers, results: Results, number: int) -> None:
    sizes, schedule = plan.sizes, plan.service_schedule()
    plan.echo(f"run {number}: steady {sizes.steady_rate}/s for {sizes.steady_seconds} s")
    figures = scenarios.steady(servers, sizes, schedule)
    results.add(figures)
    plan.echo("  " + _headline(figures, "steady.lag_p99_ms", "ms p99 lag"))
    capacity = results.get("burst.0ms.rate")
    if capacity and sizes.steady_fit:
        # and at a rate this box sustains, to show the lag of the design itself
        rate = scenarios.fitting_rate(capacity)
        plan.echo(f"run {number}: steady {rate}/s (half the burst capacity)")
        figures = scenarios.steady(servers, sizes, schedule, rate, "steady_fit")
        results.add(figures)
        plan.echo("  " + _headline(figures, "steady_fit.lag_p99_ms", "ms p99 lag"))


def _headline(figures: dict[str, float], name: str, unit: str) -> str:
    value = figures.get(name)
    return f"{num(value)} {unit}" if value is not None else f"{name}: not measured"


def _profile(plan: Plan, servers: Servers, results: Results) -> None:
    if profile.py_spy_binary() is None:
        results.notes.append("Profile: py-spy is not installed (`pip install py-spy`).")
        return
    out = servers.root / "profile-worker.txt"
    plan.echo(f"profile: burst of {plan.sizes.burst_avatars:,} with py-spy on worker[0]")
    _, notes = scenarios.burst(servers, plan.sizes, 0, plan.service_schedule(), profile_out=out)
    if notes:
        profiles = "\n\n".join(notes)
        results.notes.append(
            "Profile of one worker under the 0 ms burst (a run outside the medians):"
            f"\n\n```\n{profiles}\n```"
        )
    else:
        results.notes.append("Profile: no worker[0] was found to sample.")


def cpu_note(results: Results) -> str:
    """Where a dispatch's CPU goes, and the dispatch rate the cores allow at that cost."""
    total = results.get("footprint.cpu_ms.total")
    ceiling = cpu_ceiling(results)
    if total is None or ceiling is None:
        return ""
    parts = sorted(
        (
            (value, name.removeprefix("footprint.cpu_ms."))
            for name in results.runs
            if name.startswith("footprint.cpu_ms.")
            and not name.endswith(".total")
            and (value := results.get(name)) is not None
        ),
        reverse=True,
    )
    shares = ", ".join(f"{role} {num(value)} ms" for value, role in parts if value >= 0.01)
    cores = float(results.machine.get("cores", "0") or 0)
    return (
        f"**What bounds the burst**: under the 0 ms burst one dispatch cost {num(total)} ms"
        f" of CPU over all processes ({shares}), so {cores:.0f} cores allow at most"
        f" {num(ceiling)} dispatches/s with everything on this box; 1,000/s needs at most"
        f" {num(cores)} ms per dispatch. The anatomy above shows"
        " where a dispatch's CPU goes step by step."
    )
