"""``me2-dev bench``: the benchmark (see ``me2_devkit.bench``).

It needs no config: it starts its own MariaDB, Redis and Action simulator on
free ports, runs the scenarios, prints the targets table and writes the
Markdown report (``docs/BENCHMARKS.md`` by default). Exit 0 when it ran
(targets missed included: the report says what bounds them), 1 when a part
failed to run, 2 for bad options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from me2_scheduler.cli.common import EXIT_FAILURE, fail

DEFAULT_REPORT = "docs/BENCHMARKS.md"
F = TypeVar("F", bound=Callable[..., Any])


def _scenario_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from me2_devkit.bench.runner import SCENARIOS

    if value.strip() == "all":
        return SCENARIOS
    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose all or from {','.join(SCENARIOS)}; got {value!r}")
    return chosen


def _whole_option(name: str, least: int, default: int | None, text: str) -> Callable[[F], F]:
    """A ``--name`` taking a whole number of at least ``least`` (bad input: exit 2)."""
    return click.option(
        name,
        type=click.IntRange(min=least),
        default=default,
        show_default=default is not None,
        help=text,
    )


@click.command("bench")
@_whole_option("--runs", 1, 3, "Runs per figure (the report shows medians).")
@_whole_option(
    "--latency-runs",
    1,
    None,
    "Runs of the Action-latency table (default 1: it has 16 runs of the service).",
)
@click.option("--quick", is_flag=True, help="One run, smaller sizes, no 1 M scale.")
@click.option(
    "--scenarios",
    "scenario_names",
    default="all",
    show_default=True,
    callback=_scenario_list,
    help="Comma-separated scenarios (burst, steady, latency, scale, footprint, limits, console).",
)
@click.option(
    "--report",
    "report_path",
    default=DEFAULT_REPORT,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the Markdown report.",
)
@_whole_option("--max-avatars", 1000, 1_000_000, "Largest scale size.")
@click.option("--no-profile", is_flag=True, help="Skip the py-spy run.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="A Schedule key for the service, e.g. --set PollInterval=0.2.",
)
def bench(
    runs: int,
    latency_runs: int | None,
    quick: bool,
    scenario_names: tuple[str, ...],
    report_path: str,
    max_avatars: int,
    no_profile: bool,
    overrides: tuple[str, ...],
) -> None:
    """Benchmark the service on this box and write the report."""
    from me2_devkit.bench import report, runner, scenarios
    from me2_scheduler.errors import SchedulerError

    sizes = scenarios.QUICK if quick else scenarios.FULL
    counts = tuple(n for n in sizes.scale_counts if n <= max_avatars) or (max_avatars,)
    sizes = dataclasses.replace(sizes, scale_counts=counts)
    if latency_runs is not None:
        sizes = dataclasses.replace(sizes, latency_runs=latency_runs)
    plan = runner.Plan(
        runs=1 if quick else runs,
        sizes=sizes,
        scenarios=scenario_names,
        schedule=_parse_overrides(overrides),
        profile=not no_profile,
        echo=lambda line: click.echo(line, err=True),
    )
    try:
        results = runner.run(plan)
    except SchedulerError as exc:
        fail(exc, EXIT_FAILURE)
    text = report.render(results)
    path = Path(report_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    targets = report.tables.markdown(report.TARGET_HEADER, report.target_rows(results))
    click.echo(targets)
    click.echo(f"report written to {path}")


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        parsed[key.strip()] = value.strip()
    return parsed


def register(cli_group: click.Group) -> None:
    """Add ``bench`` to ``cli_group``."""
    cli_group.add_command(bench)
