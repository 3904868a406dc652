"""The benchmark harness keeps working: a tiny run of every scenario, and its pure parts.

No timing is asserted (the figures depend on the box); the smoke run checks
that every scenario produced its figures and that the service did what the
load asked (every avatar dispatched once, the index verified clean).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from me2_devkit import bench_cli
from me2_devkit.bench import profile, report, runner
from me2_devkit.bench.env import Servers
from me2_devkit.bench.latency import bound_note, burst_size, ideal_rate, steady_rate
from me2_devkit.bench.latency_tables import latency_cells
from me2_devkit.bench.report import Results, render, target_rows
from me2_devkit.bench.runner import SCENARIOS, Plan, run
from me2_devkit.bench.scenarios import FULL, SMOKE
from me2_devkit.bench.seed import percentile
from me2_devkit.bench.tables import scale_value
from me2_devkit.testing.servers import MariaDBServer, RedisServer


@pytest.fixture(scope="module")
def smoke_results(
    mariadb: MariaDBServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Results:
    # One tiny run for every test that reads it: the run is the slow part.
    servers = Servers.around(tmp_path_factory.mktemp("bench"), mariadb, redis_server)
    try:
        return run(Plan(runs=1, sizes=SMOKE, profile=False, echo=lambda _: None), servers)
    finally:
        servers.stop()


@pytest.mark.timeout(180)
def test_a_tiny_benchmark_measures_every_scenario(smoke_results: Results) -> None:
    results = smoke_results
    assert results.get("burst.0ms.dispatched") == SMOKE.burst_avatars
    assert results.get("burst.0ms.success") == SMOKE.burst_avatars
    assert results.get("burst.0ms.repeated_keys") == 0
    assert results.get("burst.0ms.rate") > 0
    assert results.get("steady.dispatched") == SMOKE.steady_rate * SMOKE.steady_seconds
    assert results.get("steady.lag_p99_ms") is not None
    assert results.get("scale.1k.rows") == 1000
    assert results.get("scale.1k.verify_differences") == 0
    assert results.get("scale.1k.redis_mib_per_1M") > 0
    assert results.get("footprint.rss.worker_max") > 0
    assert results.get("footprint.rss.supervisor") > 0
    for limit in ("limits.grpc_calls", "limits.mysql_txns", "limits.redis_claims"):
        assert results.get(limit) > 0, limit
    assert results.get("console.1k.slowest_max_ms") > 0
    (console,) = [row for row in target_rows(results) if row[0].startswith("console")]
    assert console[0] == "console: slowest page at 1k" and console[3] in {"✓", "✗"}


@pytest.mark.timeout(180)
def test_the_latency_table_dispatches_every_cell_within_max_in_flight(
    smoke_results: Results,
) -> None:
    results = smoke_results
    (max_in_flight,) = SMOKE.latency_in_flight
    for latency_ms in SMOKE.latency_ms:
        burst = f"inflight{max_in_flight}.burst.{latency_ms}ms"
        assert results.get(f"{burst}.dispatched") >= SMOKE.latency_burst_min, burst
        assert results.get(f"{burst}.missing") == 0, burst
        assert results.get(f"{burst}.repeated_keys") == 0, burst
        assert 1 <= results.get(f"{burst}.peak_in_flight") <= max_in_flight, burst
        steady = f"inflight{max_in_flight}.steady.{latency_ms}ms"
        assert results.get(f"{steady}.missing") == 0, steady
        assert results.get(f"{steady}.peak_in_flight") <= max_in_flight, steady
    assert results.get(f"inflight{max_in_flight}.rss_worker_max") > 0
    assert latency_cells(results, "burst") == [(max_in_flight, ms) for ms in SMOKE.latency_ms]
    text = render(results)
    assert "## Action latency" in text and "of ideal" in text


@pytest.mark.timeout(180)
def test_the_report_names_every_target_with_a_verdict(smoke_results: Results) -> None:
    text = render(smoke_results)
    rows = target_rows(smoke_results)
    assert "## Targets" in text and "## Limits" in text
    measured = [row for row in rows if row[1] != "not measured"]
    assert {row[3] for row in measured} <= {"✓", "✗"}
    assert any("of gRPC calls/s" in row[4] for row in rows)
    assert smoke_results.versions["MariaDB"] in text


def test_the_median_of_runs_is_what_the_report_shows() -> None:
    results = Results()
    for value in (900.0, 1300.0, 1100.0):
        results.add({"burst.0ms.rate": value})
    assert results.get("burst.0ms.rate") == 1100.0
    (row,) = [r for r in target_rows(results) if r[0].startswith("burst")]
    assert row[1].startswith("1,100") and row[3] == "✓"


def test_a_missed_target_is_marked_as_missed() -> None:
    results = Results()
    results.add({"steady.lag_p99_ms": 1500.0})
    (row,) = [r for r in target_rows(results) if r[0].startswith("steady")]
    assert row[3] == "✗"


def test_latency_cells_are_sized_to_their_ideal_rate_and_offered_what_they_sustain() -> None:
    sizes = FULL
    assert ideal_rate(400, 200) == 2000 and ideal_rate(10, 0) is None
    assert burst_size(sizes, 10, 1000, 1200) == sizes.latency_burst_min  # 10/s × 12 s < 200
    assert burst_size(sizes, 400, 1000, 1200) == 400 * 12
    assert burst_size(sizes, 400, 200, 1200) == sizes.latency_burst_max  # the box binds
    assert steady_rate(sizes, 400, 200) == 500
    assert steady_rate(sizes, 10, 200) == 25  # half of 50/s
    assert steady_rate(sizes, 400, 0) == 500


def test_a_missed_latency_target_names_its_ideal_and_peak() -> None:
    results = Results(machine={"cores": "2"})
    burst = {
        "inflight400.burst.200ms.rate": 800.0,
        "inflight400.burst.200ms.cpu_ms": 1.6,
        "inflight400.burst.200ms.peak_in_flight": 400.0,
    }
    results.add(burst)
    (row,) = [r for r in target_rows(results) if r[0] == "MaxInFlight 400, Action 200 ms: burst"]
    assert row[3] == "✗"
    assert "0.40 of the ideal 400 in flight / 200 ms (2,000/s)" in row[4]
    assert "0.64 of the CPU ceiling" in row[4] and "peak 400 calls" in row[4]
    cpu_by_process = {
        "inflight400.burst.200ms.cpu_ms.worker": 1.0,
        "inflight400.burst.200ms.cpu_ms.action-simulator": 0.6,
    }
    results.add(cpu_by_process)
    note = bound_note(results, 400, 200)
    assert "worker 1 ms, action-simulator 0.6 ms" in note and "the CPU binds." in note


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.99) == 0.0


def test_scale_labels_sort_by_size() -> None:
    assert sorted(["1M", "10k", "100k"], key=scale_value) == ["10k", "100k", "1M"]


def test_a_py_spy_profile_is_summarised_by_self_and_total_share() -> None:
    stacks = [
        "main (me2_scheduler/workers/executor.py:1);call (grpc/_channel.py:9) 6",
        "main (me2_scheduler/workers/executor.py:1);execute (pymysql/cursors.py:3) 3",
        "main (me2_scheduler/workers/executor.py:1) 1",
    ]
    raw = "\n".join(stacks)
    samples, rows = profile.summarise(raw)
    assert samples == 10
    by_name = {name: (own, total) for name, own, total in rows}
    assert by_name["call (grpc/_channel.py)"] == (60.0, 60.0)
    assert by_name["main (workers/executor.py)"] == (10.0, 100.0)


@pytest.mark.parametrize(
    ("given", "chosen"), [(None, SCENARIOS), ("console, burst", ("console", "burst"))]
)
def test_make_bench_runs_every_scenario_unless_told_which(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: str | None, chosen: tuple[str, ...]
) -> None:
    plans: list[Plan] = []
    monkeypatch.setattr(runner, "run", lambda plan: plans.append(plan) or Results())
    monkeypatch.setattr(report, "render", lambda results: "report")
    monkeypatch.setattr(report, "target_rows", lambda results: [])
    args = ["--report", str(tmp_path / "BENCH.md")] + (["--scenarios", given] if given else [])

    result = CliRunner().invoke(bench_cli.bench, args)

    assert result.exit_code == 0, result.output
    assert [plan.scenarios for plan in plans] == [chosen]


def test_an_unknown_scenario_is_a_usage_error_naming_the_choices() -> None:
    result = CliRunner().invoke(bench_cli.bench, ["--scenarios", "burst,consol"])

    assert result.exit_code == 2
    assert "choose all or from burst," in result.output and "console" in result.output
