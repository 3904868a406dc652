"""The end-to-end scenarios, on the real process tree: burst (+ footprint) and steady.

Each returns a flat ``{figure name: value}`` for one run; ``runner`` takes
medians. The service is started first and given a moment to settle, then the
load appears at once (rows in MySQL, then the index rebuilt or added to, the
order the service itself keeps), so the figures are those of a warm service,
not of one still forking its children.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from me2_devkit.bench import probe, profile
from me2_devkit.bench.env import Servers, Stage, staged
from me2_devkit.bench.seed import (
    insert_schedules,
    percentile,
    read_dispatches,
    rebuild_index,
    wait_for_history,
)
from me2_devkit.simulators import SimulatorControl
from me2_scheduler.states import Outcome

log = logging.getLogger("me2_devkit.bench")

SETTLE_S = 2.0  # after "listening": the last children finish booting
PROFILE_DELAY_S = 2.0
STEADY_LEAD_S = 2.0  # the first due second starts this long after seeding begins, plus:
STEADY_LEAD_PER_ROW_S = 1 / 10_000  # time to insert and index the rows (~4 s for 30,000)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; the presets ``FULL`` (the target sizes), ``QUICK`` and ``SMOKE``
    are the columns of ``sizes.yaml``, which says what each field is for."""

    burst_avatars: int
    burst_latencies_ms: tuple[int, ...]
    steady_rate: int
    steady_seconds: int
    steady_fit: bool
    scale_counts: tuple[int, ...]
    scale_repeats: int
    limit_seconds: float
    limit_processes: int
    anatomy_dispatches: int
    profile_seconds: int
    workers: int
    latency_ms: tuple[int, ...]
    latency_in_flight: tuple[int, ...]
    latency_runs: int
    latency_burst_s: float
    latency_burst_min: int
    latency_burst_max: int
    latency_steady_s: int
    latency_steady_rate: int
    console_count: int


def _presets() -> list[Sizes]:
    """The columns of ``sizes.yaml`` (``[FULL, QUICK, SMOKE]`` per field), in order."""
    text = resources.files("me2_devkit.bench").joinpath("sizes.yaml").read_text(encoding="utf-8")
    table = yaml.safe_load(text)
    return [
        Sizes(**{name: _frozen(row[column]) for name, row in table.items()}) for column in range(3)
    ]


def _frozen(value: Any) -> Any:
    """A YAML list as a tuple (sizes are compared and hashed), anything else as it is."""
    return tuple(value) if isinstance(value, list) else value


FULL, QUICK, SMOKE = _presets()


def _ambient_pids(servers: Servers) -> dict[str, int]:
    """The processes outside the service that a dispatch also costs CPU in."""
    return {
        "mariadb": servers.mariadb.pid or 0,
        "redis": servers.redis.pid or 0,
        "action-simulator": servers.action.process.pid if servers.action.process else 0,
    }


def _warm_service(stage: Stage) -> int:
    """Start the service, let it settle; return the supervisor's PID."""
    service = stage.start_service()
    time.sleep(SETTLE_S)  # not a wait for a condition: children boot lazily after "listening"
    return service.process.pid


def _deadline(count: int) -> float:
    """How long a run may take before it is called stuck (≥ 20 dispatches/s)."""
    return 60.0 + count / 20


def burst(
    servers: Servers,
    sizes: Sizes,
    latency_ms: int,
    schedule: dict[str, Any],
    profile_out: Path | None = None,
    *,
    count: int | None = None,
    prefix: str | None = None,
    footprint: bool = True,
) -> tuple[dict[str, float], list[str]]:
    """``count`` (default ``burst_avatars``) due at once: dispatches/s, the peak of Action
    calls in flight at the simulator, CPU per dispatch and the workers' peak RSS; with
    ``footprint``, at 0 ms, RSS and CPU per process too.

    Figures are named ``<prefix>.<figure>`` (default prefix ``burst.<latency>ms``).
    With ``profile_out`` a worker is sampled by py-spy meanwhile and the
    summary is returned as the notes. Raises ServerStartError, StoreError.
    """
    prefix = prefix or f"burst.{latency_ms}ms"
    _configure_simulator(servers, latency_ms)
    with staged(servers, prefix.replace(".", "-"), schedule) as stage:
        supervisor = _warm_service(stage)
        count = count or sizes.burst_avatars
        planned = int(time.time()) - 10
        with stage.mysql() as conn:
            insert_schedules(conn, ((i, planned) for i in range(1, count + 1)))
        pids = {**probe.service_processes(supervisor), **_ambient_pids(servers)}
        cpu_before = probe.cpu_snapshot(pids)
        sampler = probe.RssSampler(supervisor).start()
        rebuild_index(stage)  # the backlog appears at once
        recording = _start_profile(supervisor, sizes, profile_out)
        done_at, seen = wait_for_history(stage, count, _deadline(count))
        cpu_after = probe.cpu_snapshot(pids)
        peaks = sampler.stop()
        notes = _finish_profile(recording, sizes)
        dispatches = read_dispatches(stage)
    cpu = probe.cpu_by_role(cpu_before, cpu_after)
    figures = _burst_figures(prefix, dispatches, done_at, seen, count)
    figures.update(_stats_figures(prefix, servers))
    figures[f"{prefix}.cpu_ms"] = 1000 * sum(cpu.values()) / max(seen, 1)
    for role, seconds in cpu.items():
        figures[f"{prefix}.cpu_ms.{role}"] = 1000 * seconds / max(seen, 1)
    worker_peaks = [rss for label, rss in peaks.items() if probe.role_of(label) == "worker"]
    if worker_peaks:
        figures[f"{prefix}.rss_worker_max"] = max(worker_peaks) / MIB
    if latency_ms == 0 and footprint:
        figures.update(_footprint(peaks, cpu, seen))
    return figures, notes


def _configure_simulator(servers: Servers, latency_ms: int) -> None:
    """Forget the last run's counts (the peak in flight restarts) and set the latency."""
    with SimulatorControl(servers.action.address) as control:
        control.reset()
        control.configure(latency_ms=latency_ms, fail_rate=0.0, capacity=0)


def _start_profile(supervisor: int, sizes: Sizes, out: Path | None) -> profile.Recording | None:
    if out is None or sizes.profile_seconds <= 0:
        return None
    # past the first dispatches, which open each worker's connections (one-off costs)
    time.sleep(PROFILE_DELAY_S)
    workers = [
        pid for label, pid in probe.service_processes(supervisor).items() if label == "worker[0]"
    ]
    if not workers:
        return None
    return profile.record(workers[0], "worker[0]", sizes.profile_seconds, out)


def _finish_profile(recording: profile.Recording | None, sizes: Sizes) -> list[str]:
    if recording is None:
        return []
    if not recording.wait(sizes.profile_seconds + 30):
        return [f"py-spy wrote nothing (see {recording.path.with_suffix('.log')})"]
    samples, rows = profile.summarise(recording.path.read_text(errors="replace"))
    return [profile.render(recording.label, samples, rows)]


def _burst_figures(
    prefix: str, dispatches: Any, done_at: float, seen: int, count: int
) -> dict[str, float]:
    starts = dispatches.starts
    if not starts:
        return {f"{prefix}.dispatched": float(seen)}
    window = max(done_at - starts[0], 1e-3)
    figures = {
        f"{prefix}.rate": seen / window,
        f"{prefix}.dispatched": float(seen),
        f"{prefix}.missing": float(count - seen),
        f"{prefix}.success": float(dispatches.outcomes.get(Outcome.SUCCESS, 0)),
        f"{prefix}.seconds": window,
    }
    if len(starts) > 1:
        figures[f"{prefix}.start_rate"] = (len(starts) - 1) / max(starts[-1] - starts[0], 1e-3)
    return figures


def _stats_figures(prefix: str, servers: Servers) -> dict[str, float]:
    """Action calls and repeated keys (a slot dispatched twice would show here), and the
    most calls the simulator held at once."""
    with SimulatorControl(servers.action.address) as control:
        stats = control.stats()
    repeats = sum(n - 1 for n in stats.calls_per_key.values() if n > 1)
    return {
        f"{prefix}.action_calls": float(stats.total),
        f"{prefix}.repeated_keys": float(repeats),
        f"{prefix}.peak_in_flight": float(stats.peak_in_flight),
    }


def _footprint(peaks: dict[str, int], cpu: dict[str, float], dispatched: int) -> dict[str, float]:
    figures = {f"footprint.rss.{label}": rss / MIB for label, rss in peaks.items()}
    worker_peaks = [rss for label, rss in peaks.items() if probe.role_of(label) == "worker"]
    if worker_peaks:
        figures["footprint.rss.worker_max"] = max(worker_peaks) / MIB
    for role, seconds in cpu.items():
        figures[f"footprint.cpu_ms.{role}"] = 1000 * seconds / max(dispatched, 1)
    figures["footprint.cpu_ms.total"] = 1000 * sum(cpu.values()) / max(dispatched, 1)
    return figures


def fitting_rate(capacity: float) -> int:
    """Half of a measured capacity (dispatches/s), in steps of 25: a rate the box sustains."""
    return max(25, int(capacity / 2 // 25 * 25))


def steady(
    servers: Servers,
    sizes: Sizes,
    schedule: dict[str, Any],
    rate: int | None = None,
    prefix: str = "steady",
    *,
    latency_ms: int = 0,
    seconds: int | None = None,
) -> dict[str, float]:
    """``rate`` (default ``steady_rate``) avatars due per second for ``seconds`` (default
    ``steady_seconds``), Action answering after ``latency_ms``.

    Returns lag percentiles, throughput and the peak of Action calls in flight
    under ``prefix``. Raises ServerStartError, StoreError, RedisIndexError.
    """
    _configure_simulator(servers, latency_ms)
    rate, seconds = rate or sizes.steady_rate, seconds or sizes.steady_seconds
    count = rate * seconds
    with staged(servers, prefix.replace(".", "-"), schedule) as stage:
        _warm_service(stage)
        first_due = int(time.time() + STEADY_LEAD_S + count * STEADY_LEAD_PER_ROW_S)
        rows = [(i + 1, first_due + i // rate) for i in range(count)]
        with stage.mysql() as conn:
            insert_schedules(conn, rows)
        stage.index.put_due_many(rows)  # MySQL first, then Redis, as the service writes
        seeded_late = max(0.0, time.time() - first_due)
        _, seen = wait_for_history(stage, count, seconds + _deadline(count))
        dispatches = read_dispatches(stage)
    lags = dispatches.lags_ms
    starts = dispatches.starts
    # over the offered window: from the first due second to the last start
    span = starts[-1] - first_due if starts else 0.0
    with SimulatorControl(servers.action.address) as control:
        peak = control.stats().peak_in_flight
    return {
        f"{prefix}.peak_in_flight": float(peak),
        f"{prefix}.lag_p50_ms": percentile(lags, 0.50),
        f"{prefix}.lag_p99_ms": percentile(lags, 0.99),
        f"{prefix}.lag_max_ms": float(lags[-1]) if lags else 0.0,
        f"{prefix}.throughput": len(starts) / span if span > 0 else 0.0,
        f"{prefix}.offered": float(rate),
        f"{prefix}.dispatched": float(seen),
        f"{prefix}.missing": float(count - seen),
        f"{prefix}.seeded_late_s": seeded_late,
    }
