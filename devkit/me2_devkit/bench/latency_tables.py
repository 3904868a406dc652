"""The benchmark report's Action-latency tables: burst and steady per MaxInFlight and latency."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from me2_devkit.bench.tables import RATES_AND_LAGS, markdown, num, show

if TYPE_CHECKING:
    from me2_devkit.bench.report import Results

_CELL = re.compile(r"^inflight(\d+)\.(burst|steady)\.(\d+)ms\.")
# The seed's figures before MaxInFlight (one call per worker), for comparison.
BEFORE_MAX_IN_FLIGHT = (
    "1,186/s burst at 0 ms, 974/s at 5 ms, p99 lag 478 ms at 500/s"
    " (docs/BENCHMARKS.md of 2026-11-27)"
)


def _count(results: Results, name: str) -> str:
    """A whole-number figure (calls, avatars) with its range over runs."""
    value = results.get(name)
    if value is None:
        return "–"
    values = results.runs[name]
    spread = f" ({min(values):,.0f}–{max(values):,.0f})" if len(values) > 1 else ""
    return f"{value:,.0f}{spread}"


def latency_cells(results: Results, kind: str) -> list[tuple[int, int]]:
    """The (MaxInFlight, latency ms) cells measured for ``kind`` (burst or steady), sorted."""
    cells = set()
    for name in results.runs:
        found = _CELL.match(name)
        if found and found.group(2) == kind:
            cells.add((int(found.group(1)), int(found.group(3))))
    return sorted(cells)


def _ideal(max_in_flight: int, latency_ms: int) -> float | None:
    return max_in_flight * 1000 / latency_ms if latency_ms else None


def _ratio(value: float | None, limit: float | None) -> str:
    return f"{value / limit:.2f}" if value is not None and limit else "–"


# Both tables are keyed by their cell: MaxInFlight and the Action latency.
_KEY_HEADER = ["MaxInFlight", "Action latency"]


def _key_cells(max_in_flight: int, latency_ms: int) -> list[str]:
    return [str(max_in_flight), f"{latency_ms:,} ms"]


LATENCY_BURST_HEADER = [
    *_KEY_HEADER,
    "Dispatches/s",
    "Ideal",
    "of ideal",
    "CPU ceiling",
    "of CPU ceiling",
    "Bound",
    "Peak in flight",
    "Avatars",
    "Repeated keys",
    "Worker RSS",
]


def _burst_cell(results: Results, max_in_flight: int, latency_ms: int) -> list[str]:
    prefix = f"inflight{max_in_flight}.burst.{latency_ms}ms"
    rate, ideal = results.get(f"{prefix}.rate"), _ideal(max_in_flight, latency_ms)
    cpu_ms, cores = results.get(f"{prefix}.cpu_ms"), float(results.machine.get("cores") or 0)
    ceiling = cores * 1000 / cpu_ms if cpu_ms and cores else None
    binds = "CPU" if ceiling and (ideal is None or ceiling < ideal) else "in flight"
    return [
        *_key_cells(max_in_flight, latency_ms),
        show(results, f"{prefix}.rate", "/s"),
        f"{num(ideal)}/s" if ideal else "∞",
        _ratio(rate, ideal),
        f"{num(ceiling)}/s" if ceiling else "–",
        _ratio(rate, ceiling),
        binds,
        _count(results, f"{prefix}.peak_in_flight"),
        _count(results, f"{prefix}.dispatched"),
        _count(results, f"{prefix}.repeated_keys"),
        show(results, f"{prefix}.rss_worker_max", "MiB"),
    ]


LATENCY_STEADY_HEADER = [
    *_KEY_HEADER,
    *(title for title, _, _ in RATES_AND_LAGS),
    "Peak in flight",
    "Dispatched",
]


def _steady_cell(results: Results, max_in_flight: int, latency_ms: int) -> list[str]:
    prefix = f"inflight{max_in_flight}.steady.{latency_ms}ms"
    return [
        *_key_cells(max_in_flight, latency_ms),
        *(show(results, f"{prefix}.{name}", unit) for _, name, unit in RATES_AND_LAGS),
        _count(results, f"{prefix}.peak_in_flight"),
        _count(results, f"{prefix}.dispatched"),
    ]


def latency_section(results: Results) -> str:
    """The Action-latency table: burst and steady per MaxInFlight and latency."""
    bursts, steadies = latency_cells(results, "burst"), latency_cells(results, "steady")
    if not bursts and not steadies:
        return ""
    runs = results.settings.get("latency runs", "1")
    text = (
        "## Action latency\n\nBurst and steady with the simulator answering after a fixed"
        f" latency, for each `Schedule.MaxInFlight` ({runs} run(s) per cell: the table has"
        " many cells). A burst is sized to last a dozen seconds at the rate the cell can reach."
        " *Ideal* is `MaxInFlight / latency`, what the calls in flight allow; the *CPU ceiling*"
        " is what the 2 cores allow at the CPU one dispatch cost in that burst (all processes:"
        " service, MariaDB, Redis, simulator); *bound* is the lower of the two. *Peak in"
        " flight*: the most Action calls the simulator handled at once. *Worker RSS*: the"
        " largest worker's peak. The steady runs offer 500/s, or half the ideal when that is"
        " lower (a rate the cell sustains). With MaxInFlight 10 (the default) each worker"
        " holds one call, as the seed; before MaxInFlight the service measured"
        f" {BEFORE_MAX_IN_FLIGHT}, to be compared with the Burst and Steady sections above.\n\n"
    )
    burst_rows = [_burst_cell(results, m, lat) for m, lat in bursts]
    parts = [text + "### Burst\n\n" + markdown(LATENCY_BURST_HEADER, burst_rows)]
    if steadies:
        rows = [_steady_cell(results, m, lat) for m, lat in steadies]
        parts.append("### Steady\n\n" + markdown(LATENCY_STEADY_HEADER, rows))
    return "\n\n".join(parts)
