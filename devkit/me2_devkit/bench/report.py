"""The benchmark's targets (throughput, lag, scale, footprint, Action calls in flight) and
the report that shows each figure against its target and limit.

A ``Results`` holds every run's figures; the report shows medians. Every
headline figure names the limit it is bound by (a figure from ``limits`` or
from the CPU the box has), and the ratio says how much of it the service uses.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from me2_devkit.bench import latency_tables, tables
from me2_scheduler.clock import utc_now


@dataclass
class Results:
    """Every run's figures (name → values), notes, and where and how they were taken."""

    runs: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    other_cpu_seconds: float = 0.0  # CPU other processes (not the benchmark's) used meanwhile
    started: datetime = field(default_factory=utc_now)
    seconds: float = 0.0

    def add(self, figures: dict[str, float]) -> None:
        for name, value in figures.items():
            self.runs.setdefault(name, []).append(value)

    def get(self, name: str) -> float | None:
        """The median of ``name`` over its runs, or None when it was not measured."""
        values = self.runs.get(name)
        return statistics.median(values) if values else None

    def count(self, name: str) -> int:
        return len(self.runs.get(name, []))


TARGET_HEADER = ["Figure", "Median", "Target", "Met", "Against its limit"]

Bound = Callable[["Results", float], str]
"""What a target's figure is bound by, as text: the figure read against its limit."""


@dataclass(frozen=True)
class Target:
    """One goal: ``figure`` compared with ``bound`` (``at_least`` or at most)."""

    title: str
    figure: str
    unit: str
    bound: float
    at_least: bool
    bounded_by: Bound | None = None

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


def _cores(results: Results) -> float:
    return float(results.machine.get("cores", "0") or 0)


def _ceiling(results: Results, per_dispatch_ms: float | None) -> float | None:
    """Dispatches/s the cores allow when a dispatch costs ``per_dispatch_ms`` of CPU, or None
    when that cost or the core count is not known."""
    cores = _cores(results)
    return cores * 1000 / per_dispatch_ms if per_dispatch_ms and cores else None


def cpu_ceiling(results: Results) -> float | None:
    """Dispatches/s the cores allow at the CPU a dispatch cost under the burst (all processes)."""
    return _ceiling(results, results.get("footprint.cpu_ms.total"))


def anatomy_ceiling(results: Results) -> float | None:
    """Dispatches/s the cores allow at the CPU one dispatch costs alone (``anatomy``)."""
    costs = [results.get(f"anatomy.dispatch.{part}") for part in tables.ANATOMY_PARTS]
    return None if None in costs else _ceiling(results, sum(costs))


def cell_cpu_ceiling(results: Results, prefix: str) -> float | None:
    """Dispatches/s the cores allow at the CPU a dispatch cost in one latency cell's burst."""
    return _ceiling(results, results.get(f"{prefix}.cpu_ms"))


def _share(value: float, name: str, limit: float | None, relation: str = "of") -> str | None:
    """``value`` as a share of the rate ``limit``: ``0.50 of name (2,000/s)``; None without
    a limit."""
    return f"{value / limit:.2f} {relation} {name} ({tables.num(limit)}/s)" if limit else None


def latency_burst_bound(max_in_flight: int, latency_ms: int) -> Bound:
    """The bound of a latency cell's burst: its ideal rate, its CPU ceiling, its peak."""
    prefix = f"inflight{max_in_flight}.burst.{latency_ms}ms"

    def bound(results: Results, value: float) -> str:
        ideal = max_in_flight * 1000 / latency_ms if latency_ms else None
        ceiling = cell_cpu_ceiling(results, prefix)
        parts = [
            _share(value, f"the ideal {max_in_flight} in flight / {latency_ms} ms", ideal),
            _share(value, "the CPU ceiling at this cell's CPU per dispatch", ceiling),
        ]
        peak = results.get(f"{prefix}.peak_in_flight")
        if peak is not None:
            parts.append(f"peak {tables.num(peak)} calls in flight at the simulator")
        return "; ".join(part for part in parts if part)

    return bound


def latency_steady_bound(max_in_flight: int, latency_ms: int) -> Bound:
    """What a latency cell's steady run was offered, and the calls in flight it needed."""
    prefix = f"inflight{max_in_flight}.steady.{latency_ms}ms"

    def bound(results: Results, value: float) -> str:
        offered, peak = results.get(f"{prefix}.offered"), results.get(f"{prefix}.peak_in_flight")
        if offered is None or peak is None:
            return ""
        return f"offered {tables.num(offered)}/s; peak {tables.num(peak)} calls in flight"

    return bound


def burst_bound(results: Results, value: float) -> str:
    parts = [
        _share(value, "gRPC calls/s alone", results.get("limits.grpc_calls")),
        _share(value, "MariaDB txns/s alone", results.get("limits.mysql_txns")),
        _share(value, "the CPU ceiling under the burst", cpu_ceiling(results)),
        _share(value, "the CPU ceiling of one dispatch alone", anatomy_ceiling(results)),
    ]
    return "; ".join(part for part in parts if part)


def steady_bound(results: Results, value: float) -> str:
    offered, capacity = results.get("steady.offered"), results.get("burst.0ms.rate")
    share = _share(offered, "the burst capacity", capacity, "×") if offered else None
    return f"offered {tables.num(offered)}/s = {share}" if share else ""


def claim_bound(results: Results, value: float) -> str:
    big = largest_scale(results)
    claim_ms, rate = results.get(f"scale.{big}.claim_ms"), results.get("limits.redis_claims")
    if claim_ms is None or not rate:
        return ""
    return (
        f"a claim of 500 at {big}: {tables.num(claim_ms)} ms; Redis claims"
        f" {tables.num(rate)} avatars/s = {rate / 1000:.0f} × a 1,000/s dispatch rate"
    )


def rebuild_bound(results: Results, value: float) -> str:
    big = largest_scale(results)
    rows = results.get(f"scale.{big}.rows")
    return f"{tables.num(rows / value)} rows/s streamed MySQL → Redis" if rows and value else ""


def largest_scale(results: Results, figure: str = ".rebuild_s") -> str:
    """The label of the most avatars ``figure`` was measured at (``1M`` in a full run):
    the scale scenario's by default, the console's with ``.slowest_max_ms``."""
    found = [name.split(".")[1] for name in results.runs if name.endswith(figure)]
    return max(found, key=tables.scale_value, default="1M")


def _latency_burst_target(max_in_flight: int, latency_ms: int, rate: float) -> Target:
    """At least ``rate`` dispatches/s in the burst of a latency cell."""
    title = f"MaxInFlight {max_in_flight}, Action {latency_ms:,} ms: burst"
    figure = f"inflight{max_in_flight}.burst.{latency_ms}ms.rate"
    bound = latency_burst_bound(max_in_flight, latency_ms)
    return Target(title, figure, "/s", rate, True, bound)


def _latency_steady_target(max_in_flight: int, latency_ms: int, lag_ms: float) -> Target:
    """At most ``lag_ms`` p99 lag in the steady run of a latency cell (offered 500/s)."""
    title = f"MaxInFlight {max_in_flight}, Action {latency_ms:,} ms: steady p99 lag at 500/s"
    figure = f"inflight{max_in_flight}.steady.{latency_ms}ms.lag_p99_ms"
    bound = latency_steady_bound(max_in_flight, latency_ms)
    return Target(title, figure, "ms", lag_ms, False, bound)


def targets(results: Results) -> list[Target]:
    """The benchmark's targets, over the figures of this run."""
    big = largest_scale(results)
    console = largest_scale(results, ".slowest_max_ms")
    slowest_page = f"console.{console}.slowest_max_ms"
    return [
        Target("burst, Action 0 ms", "burst.0ms.rate", "/s", 1000, True, burst_bound),
        Target("steady p99 lag at 500/s", "steady.lag_p99_ms", "ms", 1000, False, steady_bound),
        Target(f"claim batch at {big} / at 10k", "scale.claim_ratio", "×", 1.2, False, claim_bound),
        Target(f"rebuild-index of {big}", f"scale.{big}.rebuild_s", "s", 30, False, rebuild_bound),
        Target("Redis per 1 M avatars", f"scale.{big}.redis_mib_per_1M", "MiB", 110, False),
        Target("each worker's RSS", "footprint.rss.worker_max", "MiB", 60, False),
        _latency_burst_target(400, 200, 1000),
        _latency_steady_target(400, 200, 1000),
        _latency_burst_target(400, 1000, 300),
        Target(
            "MaxInFlight 400: each worker's RSS", "inflight400.rss_worker_max", "MiB", 60, False
        ),
        Target(f"console: slowest page at {console}", slowest_page, "ms", 200, False),
    ]


def derive(results: Results) -> None:
    """Add the figures computed from others (the claim ratio)."""
    labels = sorted(
        {n.split(".")[1] for n in results.runs if n.endswith(".claim_ms")}, key=tables.scale_value
    )
    if len(labels) >= 2:
        small = results.runs[f"scale.{labels[0]}.claim_ms"]
        large = results.runs[f"scale.{labels[-1]}.claim_ms"]
        results.runs["scale.claim_ratio"] = [b / a for a, b in zip(small, large, strict=False) if a]


def target_rows(results: Results) -> list[list[str]]:
    """One row per target: title, median, goal, ✓/✗, and what it is bound by."""
    rows = []
    for target in targets(results):
        value = results.get(target.figure)
        sign = "≥" if target.at_least else "≤"
        goal = f"{sign} {tables.num(target.bound)} {target.unit}"
        if value is None:
            rows.append([target.title, "not measured", goal, "–", ""])
            continue
        mark = "✓" if target.met(value) else "✗"
        bound = target.bounded_by(results, value) if target.bounded_by else ""
        rows.append([target.title, f"{tables.num(value)} {target.unit}", goal, mark, bound])
    return rows


def render(results: Results) -> str:
    """The whole report as Markdown."""
    sections = [
        "# Benchmarks",
        tables.intro(results),
        "## Targets",
        tables.markdown(TARGET_HEADER, target_rows(results)),
        *detail_sections(results),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def detail_sections(results: Results) -> list[str]:
    """The sections after the targets, in the report's order (empty ones are left out)."""
    return [
        tables.burst_section(results),
        tables.steady_section(results),
        latency_tables.latency_section(results),
        tables.scale_section(results),
        tables.footprint_section(results),
        tables.anatomy_section(results),
        tables.limits_section(results),
        tables.notes_section(results),
    ]
