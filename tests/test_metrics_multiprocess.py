"""Metrics from every process: prometheus_client's multiprocess mode, as the supervisor reads it.

These run real processes: the pytest process itself has prometheus_client in
single-process mode, as any importer without the env has.
"""

from __future__ import annotations

from pathlib import Path

from me2_scheduler.supervisor.http import SupervisorMetrics, render_metrics

from .fixtures_metrics import parse, run_python, value, write_metrics


def test_nothing_the_run_command_imports_loads_prometheus_client_before_the_dir_is_set() -> None:
    # The real CLI path up to the moment run_service exports the dir, then stop.
    done = run_python(
        """
        import sys
        from me2_scheduler.supervisor import http

        def create():
            sys.exit(42 if "prometheus_client" in sys.modules else 0)

        http.MetricsDir.create = staticmethod(create)
        from me2_scheduler import cli
        sys.argv = ["me2-scheduler", "run", "-f", "etc/scheduler-test.yaml"]
        cli.main()
        """,
        env={"PROMETHEUS_MULTIPROC_DIR": ""},
    )
    assert done.returncode == 0, done.stderr


def test_a_scrape_sums_the_counters_of_every_process_dead_or_alive(tmp_path: Path) -> None:
    write_metrics(tmp_path, 'metrics.DISPATCHES.labels(result="success").inc(3)')
    write_metrics(tmp_path, 'metrics.DISPATCHES.labels(result="success").inc(4)')
    body, content_type = render_metrics(str(tmp_path))
    samples = parse(body.decode())
    assert value(samples, "scheduler_dispatch_total", result="success") == 7
    assert value(samples, "scheduler_dispatch_total", result="failure") == 0  # declared at import
    assert content_type.startswith("text/plain")


def test_a_gauge_the_poller_set_outlives_it_and_beats_the_zeros_of_other_processes(
    tmp_path: Path,
) -> None:
    poller_pid = write_metrics(
        tmp_path, 'metrics.AUTO_PAUSED.set(3)\nmetrics.AVATARS.labels(status="active").set(9)'
    )
    write_metrics(tmp_path, "pass")  # a process that only imported the metrics
    SupervisorMetrics(str(tmp_path)).child_reaped(poller_pid)
    samples = parse(render_metrics(str(tmp_path))[0].decode())
    assert value(samples, "scheduler_auto_paused_avatars") == 3
    assert value(samples, "scheduler_avatars", status="active") == 9
