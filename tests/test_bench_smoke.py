"""The benchmark harness keeps working: a tiny run of every scenario, and its pure parts.

No timing is asserted (the figures depend on the box); the smoke run checks
that every scenario produced its figures and that the service did what the
load asked (every avatar dispatched once, the index verified clean).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from me2_devkit.bench import profile
from me2_devkit.bench.env import Servers
from me2_devkit.bench.report import Results, render, target_rows
from me2_devkit.bench.runner import Plan, run
from me2_devkit.bench.scenarios import SMOKE
from me2_devkit.bench.seed import percentile
from me2_devkit.bench.tables import scale_value
from me2_devkit.testing.servers import MariaDBServer, RedisServer


@pytest.fixture
def smoke_results(mariadb: MariaDBServer, redis_server: RedisServer, tmp_path: Path) -> Results:
    servers = Servers.around(tmp_path, mariadb, redis_server)
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


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.99) == 0.0


def test_scale_labels_sort_by_size() -> None:
    assert sorted(["1M", "10k", "100k"], key=scale_value) == ["10k", "100k", "1M"]


def test_a_py_spy_profile_is_summarised_by_self_and_total_share() -> None:
    raw = "\n".join([
        "main (me2_scheduler/workers/executor.py:1);call (grpc/_channel.py:9) 6",
        "main (me2_scheduler/workers/executor.py:1);execute (pymysql/cursors.py:3) 3",
        "main (me2_scheduler/workers/executor.py:1) 1",
    ])  # fmt: skip
    samples, rows = profile.summarise(raw)
    assert samples == 10
    by_name = {name: (own, total) for name, own, total in rows}
    assert by_name["call (grpc/_channel.py)"] == (60.0, 60.0)
    assert by_name["main (workers/executor.py)"] == (10.0, 100.0)
