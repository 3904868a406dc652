"""``me2-scheduler diary run-now`` and ``me2-scheduler diary status``.

``run-now`` runs one date's diaries in the foreground under the same
single-run rule as the cron, per date: it refuses (exit 1, one line) when a
run of the date is done or another process is running one, resumes the
newest stale or failed one from its checkpoint, and otherwise starts a run
keyed by the moment it was asked for (its ``fire_time``). SIGINT/SIGTERM stop
it between avatars with the checkpoint saved; a second signal quits at once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from datetime import date, datetime
from typing import Any

import click

from me2_scheduler.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    config_option,
    fail,
    load_or_exit,
)
from me2_scheduler.errors import SchedulerError

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_STATUS_COLUMNS = (
    "run_date",
    "fire_time",
    "status",
    "success",
    "failure",
    "total",
    "checkpoint",
    "owner",
    "started_at",
    "heartbeat_at",
    "finished_at",
)


@click.group("diary")
def diary() -> None:
    """Diary runs: start one now, or show the last ones."""


@diary.command("run-now")
@config_option
@click.option(
    "--date",
    "run_date",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="The diary date (YYYY-MM-DD); default today in the cron's time zone.",
)
def run_now(config_path: str, run_date: datetime | None) -> None:
    """Run the diary of every active avatar for one date, now, in the foreground."""
    sys.exit(_run_now(config_path, run_date.date() if run_date else None))


@diary.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
def status(config_path: str, as_json: bool, limit: int) -> None:
    """Show the last diary runs with their fire times and counts, newest first."""
    _status(config_path, as_json, limit)


def stop_on_signals(stop: threading.Event) -> None:
    """Route SIGINT/SIGTERM to ``stop`` through a ``sigwait`` thread (no signal handler).

    Call before any other thread starts: the signals are blocked here and
    every later thread inherits the mask, so only the waiting thread sees them.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)

    def wait_for_signals() -> None:
        signal.sigwait(_STOP_SIGNALS)
        click.echo("stopping after the calls in flight (signal again to quit now)", err=True)
        stop.set()
        signal.sigwait(_STOP_SIGNALS)
        os._exit(EXIT_FAILURE)

    threading.Thread(target=wait_for_signals, name="signals", daemon=True).start()


def _run_now(config_path: str, run_date: date | None) -> int:
    from me2_scheduler.logs import setup_logging
    from me2_scheduler.states import DiaryRunResult
    from me2_scheduler.timefmt import Display
    from me2_scheduler.workers.diary import DiaryScheduler, rpc_problem

    config = load_or_exit(config_path)
    setup_logging(config.log, "diary-run-now", timezone=config.timezone)
    problem = rpc_problem(config)
    if problem is not None:
        fail(SchedulerError(f"DiaryRpc: {problem}"))
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        scheduler = DiaryScheduler(config, stop=stop)
    except ValueError as exc:
        fail(exc, EXIT_USAGE)
    display = Display(config.timezone)
    try:
        now = datetime.now(scheduler.schedule.tz)
        run_date = run_date or scheduler.run_date_of(now)
        claim, row = scheduler.claim_manual(run_date)
        if claim is None:
            state = f"{row.summary()}, fire time {display.format(row.fire_time)}" if row else "gone"
            click.echo(f"diary run for {run_date} not started: it is {state}", err=True)
            return EXIT_FAILURE
        result = scheduler.execute(claim)
    except SchedulerError as exc:
        fail(exc)
    finally:
        scheduler.close()
    click.echo(
        f"diary run for {run_date}: {result.result}, up to {result.checkpoint},"
        f" fire time {display.format(result.key.fire_time)}"
    )
    ended = (DiaryRunResult.DONE, DiaryRunResult.SKIPPED)
    return EXIT_OK if result.result in ended else EXIT_FAILURE


def _status(config_path: str, as_json: bool, limit: int) -> None:
    from me2_scheduler.ops.status import diary_run_record
    from me2_scheduler.storage.diary_runs import DiaryRunStore
    from me2_scheduler.timefmt import Display

    config = load_or_exit(config_path)
    runs = DiaryRunStore(config.mysql)
    try:
        rows = runs.latest(limit)
    except SchedulerError as exc:
        fail(exc)
    finally:
        runs.close()
    display = Display(config.timezone)
    records = [
        {
            **diary_run_record(run, display),
            "checkpoint": run.checkpoint_avatar_id,
            "owner": run.owner or "",
            "started_at": display.format(run.started_at),
            "heartbeat_at": display.format(run.heartbeat_at),
            "finished_at": display.format(run.finished_at),
        }
        for run in rows
    ]
    if as_json:
        click.echo(json.dumps(records, ensure_ascii=False, indent=2))
    elif not records:
        click.echo("no diary runs yet")
    else:
        click.echo(_table(records))


def _table(records: list[dict[str, Any]]) -> str:
    """Left-aligned columns; a missing total shows as ``-``."""
    cells = [list(_STATUS_COLUMNS)]
    cells += [["-" if r[c] is None else str(r[c]) for c in _STATUS_COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_STATUS_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
