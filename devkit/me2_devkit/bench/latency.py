"""The Action-latency table: burst and steady at several Action latencies and MaxInFlight values.

The seed holds one Action call per worker, so its dispatch rate is at most
``MaxWorkers / latency``; ``Schedule.MaxInFlight`` lets the workers hold that
many calls at once, so the rate can reach ``MaxInFlight / latency`` (the
*ideal* of a cell) until the box's CPU binds. Each cell (MaxInFlight ×
latency) runs a burst sized to last about ``latency_burst_s`` at that rate,
and a steady run at ``latency_steady_rate`` (or half the ideal rate when that
is lower, a rate the cell can sustain). Besides the rate and the lag, each
reads how many Action calls the simulator saw at once (its peak in flight)
and the CPU a dispatch cost, so the report can say which bound holds the
figure: the calls in flight or the cores.

Figures are named ``inflight<M>.burst.<L>ms.<figure>`` and
``inflight<M>.steady.<L>ms.<figure>``; ``inflight<M>.rss_worker_max`` is the
largest worker RSS over the cells of one MaxInFlight.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from me2_devkit.bench import scenarios
from me2_devkit.bench.env import Servers
from me2_devkit.bench.scenarios import Sizes
from me2_devkit.bench.tables import num

if TYPE_CHECKING:
    from me2_devkit.bench.report import Results

# Dispatches/s this box manages at 0 ms, only to size a burst when the
# benchmark has not measured it yet (the figure of docs/BENCHMARKS.md).
ASSUMED_BOX_RATE = 1200.0


def ideal_rate(max_in_flight: int, latency_ms: int) -> float | None:
    """``MaxInFlight / latency`` in dispatches/s; None at 0 ms (no bound from the calls)."""
    return max_in_flight * 1000 / latency_ms if latency_ms > 0 else None


def prefix(kind: str, max_in_flight: int, latency_ms: int) -> str:
    """The figure prefix of one cell: ``inflight400.burst.200ms``."""
    return f"inflight{max_in_flight}.{kind}.{latency_ms}ms"


def burst_size(sizes: Sizes, max_in_flight: int, latency_ms: int, box_rate: float) -> int:
    """Avatars for a burst of about ``latency_burst_s`` at the rate the cell can reach."""
    ideal = ideal_rate(max_in_flight, latency_ms)
    rate = box_rate if ideal is None else min(ideal, box_rate)
    wanted = int(rate * sizes.latency_burst_s)
    return max(sizes.latency_burst_min, min(sizes.latency_burst_max, wanted))


def steady_rate(sizes: Sizes, max_in_flight: int, latency_ms: int) -> int:
    """The offered rate of a steady cell: the target rate, or half the ideal when lower."""
    ideal = ideal_rate(max_in_flight, latency_ms)
    if ideal is None:
        return sizes.latency_steady_rate
    return max(1, min(sizes.latency_steady_rate, int(ideal / 2)))


def run_cells(
    servers: Servers,
    sizes: Sizes,
    schedule: dict[str, Any],
    echo: Callable[[str], None],
    box_rate: float | None = None,
) -> dict[str, float]:
    """One round of every cell; the figures. Raises ServerStartError, StoreError."""
    figures: dict[str, float] = {}
    for max_in_flight in sizes.latency_in_flight:
        cell_schedule = {**schedule, "MaxInFlight": max_in_flight}
        rss: list[float] = []
        for latency_ms in sizes.latency_ms:
            cell = _run_cell(
                servers, sizes, cell_schedule, max_in_flight, latency_ms, box_rate, echo
            )
            figures.update(cell)
            rss += [value for name, value in cell.items() if name.endswith(".rss_worker_max")]
        if rss:
            figures[f"inflight{max_in_flight}.rss_worker_max"] = max(rss)
    return figures


def _run_cell(
    servers: Servers,
    sizes: Sizes,
    schedule: dict[str, Any],
    max_in_flight: int,
    latency_ms: int,
    box_rate: float | None,
    echo: Callable[[str], None],
) -> dict[str, float]:
    count = burst_size(sizes, max_in_flight, latency_ms, box_rate or ASSUMED_BOX_RATE)
    burst_prefix = prefix("burst", max_in_flight, latency_ms)
    echo(f"latency: MaxInFlight {max_in_flight}, Action {latency_ms} ms: burst of {count:,}")
    figures, _ = scenarios.burst(
        servers, sizes, latency_ms, schedule, count=count, prefix=burst_prefix, footprint=False
    )
    burst_rate = _show(figures, burst_prefix + ".rate", "/s")
    peak = _show(figures, burst_prefix + ".peak_in_flight", "in flight")
    echo(f"  {burst_rate}, peak {peak}")
    rate = steady_rate(sizes, max_in_flight, latency_ms)
    steady_prefix = prefix("steady", max_in_flight, latency_ms)
    echo(f"latency: MaxInFlight {max_in_flight}, Action {latency_ms} ms: steady {rate}/s")
    seconds = sizes.latency_steady_s
    steady = scenarios.steady(
        servers, sizes, schedule, rate, steady_prefix, latency_ms=latency_ms, seconds=seconds
    )
    echo(f"  {_show(steady, steady_prefix + '.lag_p99_ms', 'ms p99 lag')}")
    return {**figures, **steady}


def _show(figures: dict[str, float], name: str, unit: str) -> str:
    value = figures.get(name)
    return f"{num(value)} {unit}" if value is not None else f"{name}: not measured"


def bound_note(results: Results, max_in_flight: int, latency_ms: int) -> str:
    """What bounds one cell's burst: its ideal rate or the CPU its dispatches cost, by part."""
    cell = prefix("burst", max_in_flight, latency_ms)
    rate, total = results.get(f"{cell}.rate"), results.get(f"{cell}.cpu_ms")
    cores = float(results.machine.get("cores", "0") or 0)
    if rate is None or not total or not cores:
        return ""
    ceiling, ideal = cores * 1000 / total, ideal_rate(max_in_flight, latency_ms)
    parts = []  # (CPU ms, part), the costliest first
    for name in results.runs:
        if name.startswith(f"{cell}.cpu_ms.") and (value := results.get(name)) is not None:
            parts.append((value, name.rsplit(".", 1)[1]))
    parts.sort(reverse=True)
    shares = ", ".join(f"{role} {num(value)} ms" for value, role in parts if value >= 0.01)
    binds = "the CPU binds" if ideal is None or ceiling < ideal else "the calls in flight bind"
    return (
        f"**What bounds MaxInFlight {max_in_flight} at {latency_ms:,} ms**: {num(rate)}"
        f" dispatches/s; one dispatch cost {num(total)} ms of CPU over all processes ({shares}),"
        f" so {cores:.0f} cores allow {num(ceiling)}/s; the calls in flight allow"
        f" {num(ideal) + '/s' if ideal else 'any rate'}: {binds}."
    )
