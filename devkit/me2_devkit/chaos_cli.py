"""``me2-dev chaos``: the reliability proof, from the command line.

Exit codes: 0 every invariant held, 1 a violation (or a fault could not be
carried out), 2 usage; a stack that cannot start prints one ``error:`` line
and exits 1.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click

DURATION_HELP = (
    "Seconds of faults per scenario (then a settle window and the audit)."
    "  [default: 300; 330 for network]"
)
SCENARIO_HELP = (
    "faults: the seeded fault plan; network: fault proxies in front of"
    " MariaDB, Redis, Action and etcd, frozen processes, skewed clocks (needs"
    " about 320 s); all: faults, then network, in one report; inflight:"
    " MaxInFlight 400 with Action slow (1 s), then failing half its calls, then"
    " down, and the breaker checked from the metrics."
)
MAX_IN_FLIGHT_HELP = (
    "Schedule.MaxInFlight (default: MaxWorkers; 400 for --scenario inflight). At least --workers."
)
REPORT_HELP = "Write the Markdown report here (e.g. docs/RELIABILITY.md)."
KEEP_HELP = "Run in this directory and keep its logs and data."
FILE_PATH = click.Path(dir_okay=False)
DIR_PATH = click.Path(file_okay=False)
SCENARIO_CHOICE = click.Choice(["all", "faults", "network", "inflight"])


def register(group: click.Group) -> None:
    """Add ``chaos`` to ``group``."""

    @group.command("chaos")
    @click.option("--duration", type=click.FloatRange(min=40), default=None, help=DURATION_HELP)
    @click.option("--seed", type=int, default=1, show_default=True, help="Seed of the fault plan.")
    @click.option("--avatars", type=click.IntRange(min=1), default=2000, show_default=True)
    @click.option("--workers", type=click.IntRange(min=1), default=10, show_default=True)
    @click.option("--report", "report_path", type=FILE_PATH, default=None, help=REPORT_HELP)
    @click.option("--keep", "keep_dir", type=DIR_PATH, default=None, help=KEEP_HELP)
    @click.option("--no-faults", is_flag=True, help="Run and audit without injecting faults.")
    @click.option(
        "--scenario", type=SCENARIO_CHOICE, default="all", show_default=True, help=SCENARIO_HELP
    )
    @click.option(
        "--max-in-flight", type=click.IntRange(min=1), default=None, help=MAX_IN_FLIGHT_HELP
    )
    def chaos(
        duration: float | None,
        seed: int,
        avatars: int,
        workers: int,
        report_path: str | None,
        keep_dir: str | None,
        no_faults: bool,
        scenario: str,
        max_in_flight: int | None,
    ) -> None:
        """Run the service under a seeded fault plan and audit DESIGN §2.3's invariants."""
        from me2_devkit.chaos.report import render_report, render_text
        from me2_devkit.chaos.runner import options_for, run_chaos
        from me2_scheduler.errors import SchedulerError

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
        # SIGTERM stops the run like Ctrl-C: every server it started is stopped first.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        if max_in_flight is not None and max_in_flight < workers:
            raise click.BadParameter(
                f"must be at least --workers ({workers})", param_hint="--max-in-flight"
            )
        chosen = {"max_in_flight": max_in_flight} if max_in_flight is not None else {}
        length = {"duration_s": duration} if duration is not None else {}
        common = {"seed": seed, "avatars": avatars, "workers": workers, "faults": not no_faults}
        scenarios = ["faults", "network"] if scenario == "all" else [scenario]
        runs = []
        for name in scenarios:
            root = Path(keep_dir) / name if keep_dir and len(scenarios) > 1 else keep_dir
            root_path = Path(root) if root else None
            options = options_for(name, **length, **common, root=root_path, **chosen)
            try:
                runs.append((options, options.plan()))  # a plan that cannot fit fails first
            except ValueError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
        summaries = []
        for options, plan in runs:
            try:
                result = run_chaos(options, plan=plan)
            except (SchedulerError, ValueError) as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
            click.echo(render_text(result.summary), nl=False)
            if not result.summary.ok:
                click.echo(f"logs and data kept in {result.root}")
            summaries.append(result.summary)
        if report_path:
            Path(report_path).parent.mkdir(parents=True, exist_ok=True)
            Path(report_path).write_text(render_report(summaries), encoding="utf-8")
            click.echo(f"report written to {report_path}")
        sys.exit(0 if all(s.ok for s in summaries) else 1)
