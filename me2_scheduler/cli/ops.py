"""The operator commands on MySQL and Redis: ``rebuild-index``, ``verify-index``,
``status`` and ``prune-history``.

Exit codes follow ``cli.common``: 0 ok, 1 operational failure (MySQL, Redis or the
gRPC server unreachable, an API result code other than 0), 2 usage or config
error. ``verify-index`` also exits 1 when the index differs from MySQL and
the differences were not (all) repaired, so a script notices. Failures print
one line, ``error: ...``, never a traceback. Progress bars go to stderr, so
``--json`` output on stdout stays parseable. The work itself is in
``me2_scheduler.ops``; its modules are imported lazily.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from me2_scheduler.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    config_option,
    count_option,
    echo_json,
    guard,
    json_option,
    load_or_exit,
)
from me2_scheduler.states import Status

SAMPLE_HELP = "Avatar ids shown per kind of difference."
NEXT_HELP = "How many of the next due avatars to list."

if TYPE_CHECKING:
    from me2_scheduler.config import Config
    from me2_scheduler.storage.index import DelayIndex
    from me2_scheduler.storage.mysql import MysqlStore


@contextlib.contextmanager
def _connected(config: Config) -> Iterator[tuple[MysqlStore, DelayIndex]]:
    """A store and an index for this process, closed afterwards."""
    from me2_scheduler.storage.index import DelayIndex
    from me2_scheduler.storage.mysql import MysqlStore

    store = MysqlStore(config.mysql)
    try:
        index = DelayIndex(config.redis)
        try:
            store.ping()  # fail fast, before any progress bar: one error line
            index.ping()
            yield store, index
        finally:
            index.close()
    finally:
        store.close()


def _bar(length: int, label: str) -> Any:
    """A progress bar on stderr; none at all when stderr is not a terminal.

    Hidden rather than reduced to its label (click's default off a terminal),
    so a script's stderr holds nothing but the one ``error:`` line on failure.
    """
    return click.progressbar(
        length=max(length, 0),
        label=label,
        file=sys.stderr,
        show_pos=True,
        show_eta=True,
        hidden=not _is_terminal(sys.stderr),
    )


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# -- index ------------------------------------------------------------------------------


@click.command("rebuild-index")
@config_option
@json_option
@count_option("--chunk", between=(100, 100_000), default=10_000, help="Rows per Redis round trip.")
def rebuild_index(config_path: str, as_json: bool, chunk: int) -> None:
    """Rebuild the Redis index from MySQL's active schedules (safe while the service runs)."""
    from me2_scheduler.ops import index_ops

    config = load_or_exit(config_path)
    with guard(), _connected(config) as (store, index):
        expected = store.counts_by_status()[Status.ACTIVE]
        with _bar(expected, "rebuilding the index") as bar:
            rows = index_ops.rebuild(store, index, chunk=chunk, progress=bar.update)
    if as_json:
        echo_json({"rows": rows})
    else:
        click.echo(f"index rebuilt: {rows} active avatars")


@click.command("verify-index")
@config_option
@json_option
@click.option("--repair", is_flag=True, help="Fix the differences found.")
@count_option("--sample", between=(0, 10_000), default=10, help=SAMPLE_HELP)
def verify_index(config_path: str, as_json: bool, repair: bool, sample: int) -> None:
    """Compare the Redis index with MySQL: missing, extra and wrong-score avatars.

    Exits 0 when the index matches MySQL (or every difference was repaired),
    1 when differences remain.
    """
    from me2_scheduler.ops.index_ops import Verifier, render_report

    config = load_or_exit(config_path)
    with guard(), _connected(config) as (store, index):
        verifier = Verifier(store, index, repair=repair, sample=sample)
        with _bar(
            store.counts_by_status()[Status.ACTIVE], "checking MySQL's active avatars"
        ) as bar:
            verifier.check_active(bar.update)
        with _bar(verifier.member_count(), "checking Redis's due and inflight") as bar:
            verifier.check_members(bar.update)
    report = verifier.report
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(render_report(report))
    sys.exit(EXIT_OK if report.clean else EXIT_FAILURE)


# -- status and history -------------------------------------------------------------


@click.command("status")
@config_option
@json_option
@count_option("--next", "next_n", between=(0, 1000), default=10, help=NEXT_HELP)
def status(config_path: str, as_json: bool, next_n: int) -> None:
    """Avatars by status, auto-paused, queue sizes, next due, diary runs, the service."""
    from me2_scheduler.ops.status import collect, render
    from me2_scheduler.storage.diary_runs import DiaryRunStore
    from me2_scheduler.timefmt import Display

    config = load_or_exit(config_path)
    with guard(), _connected(config) as (store, index):
        runs = DiaryRunStore(config.mysql)
        try:
            document = collect(config, store, index, runs, next_n=next_n)
        finally:
            runs.close()
    if as_json:
        echo_json(document)
    else:
        click.echo(render(document, zone_label=str(Display(config.timezone).zone)))


def _age(_ctx: click.Context, _param: click.Parameter, value: str) -> Any:
    from me2_scheduler.ops.prune import parse_age

    try:
        return parse_age(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("prune-history")
@config_option
@json_option
@click.option(
    "--older-than",
    "age",
    required=True,
    callback=_age,
    metavar="AGE",
    help="Delete dispatches started longer ago than this: 30d, 12h, 90m.",
)
@count_option("--batch", between=(1, 100_000), default=5000, help="Rows deleted per transaction.")
def prune_history(config_path: str, as_json: bool, age: Any, batch: int) -> None:
    """Delete old dispatch history in small transactions; print how many rows went."""
    from me2_scheduler.ops.prune import cutoff, prune
    from me2_scheduler.storage.mysql import MysqlStore
    from me2_scheduler.timefmt import Display

    config = load_or_exit(config_path)
    before = cutoff(age)
    store = MysqlStore(config.mysql)
    with guard():
        try:
            with _bar(store.count_history_before(before), "pruning history") as bar:
                deleted = prune(store, before, batch=batch, progress=bar.update)
        finally:
            store.close()
    shown = Display(config.timezone).format(before)
    if as_json:
        echo_json({"deleted": deleted, "before": shown})
    else:
        click.echo(f"deleted {deleted} history rows started before {shown}")


COMMANDS = (rebuild_index, verify_index, status, prune_history)
