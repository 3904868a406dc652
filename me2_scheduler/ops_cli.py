"""The operator commands: ``rebuild-index``, ``verify-index``, ``status``,
``prune-history`` and ``avatar <action> ID``.

Exit codes follow ``cli``: 0 ok, 1 operational failure (MySQL, Redis or the
gRPC server unreachable, an API result code other than 0), 2 usage or config
error. ``verify-index`` also exits 1 when the index differs from MySQL and
the differences were not (all) repaired, so a script notices. Failures print
one line, ``error: ...``, never a traceback. Progress bars go to stderr, so
``--json`` output on stdout stays parseable. The work itself is in
``me2_scheduler.ops``; its modules are imported lazily.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from me2_scheduler.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, config_option, fail, load_or_exit
from me2_scheduler.errors import ConfigError, SchedulerError

if TYPE_CHECKING:
    from me2_scheduler.config import Config
    from me2_scheduler.storage.index import DelayIndex
    from me2_scheduler.storage.mysql import MysqlStore

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of text."
)
_AVATAR_HELP = {
    "enable": "Enable an avatar's schedule (create it when absent).",
    "pause": "Pause an active avatar's schedule.",
    "resume": "Resume a paused avatar (also one auto-paused after failures).",
    "disable": "Disable an avatar's schedule until it is enabled again.",
    "trigger": "Dispatch one action for the avatar now.",
    "get": "Show an avatar's schedule.",
    "history": "Show an avatar's dispatches, newest first (one page).",
}


def register(cli_group: click.Group) -> None:
    """Add the operator commands to ``cli_group``."""
    for command in (rebuild_index, verify_index, status, prune_history, avatar):
        cli_group.add_command(command)
    for action in _AVATAR_HELP:
        avatar.add_command(_avatar_command(action))


# -- shared plumbing -----------------------------------------------------------------


def _fail(exc: BaseException) -> None:
    """``error: <one line>`` on stderr, exit 1."""
    fail(SchedulerError(" ".join(str(exc).split())))


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Config errors exit 2 with ``config error:``, operational ones 1 with ``error:``."""
    try:
        yield
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except SchedulerError as exc:
        _fail(exc)


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
        length=max(length, 0), label=label, file=sys.stderr, show_pos=True, show_eta=True,
        hidden=not _is_terminal(sys.stderr),
    )  # fmt: skip


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


# -- index ------------------------------------------------------------------------------


@click.command("rebuild-index")
@config_option
@json_option
@click.option("--chunk", type=click.IntRange(100, 100_000), default=10_000, show_default=True,
              help="Rows per Redis round trip.")  # fmt: skip
def rebuild_index(config_path: str, as_json: bool, chunk: int) -> None:
    """Rebuild the Redis index from MySQL's active schedules (safe while the service runs)."""
    from me2_scheduler.ops import index_ops

    config = load_or_exit(config_path)
    with _guard(), _connected(config) as (store, index):
        expected = store.counts_by_status()["active"]
        with _bar(expected, "rebuilding the index") as bar:
            rows = index_ops.rebuild(store, index, chunk=chunk, progress=bar.update)
    if as_json:
        _echo_json({"rows": rows})
    else:
        click.echo(f"index rebuilt: {rows} active avatars")


@click.command("verify-index")
@config_option
@json_option
@click.option("--repair", is_flag=True, help="Fix the differences found.")
@click.option("--sample", type=click.IntRange(0, 10_000), default=10, show_default=True,
              help="Avatar ids shown per kind of difference.")  # fmt: skip
def verify_index(config_path: str, as_json: bool, repair: bool, sample: int) -> None:
    """Compare the Redis index with MySQL: missing, extra and wrong-score avatars.

    Exits 0 when the index matches MySQL (or every difference was repaired),
    1 when differences remain.
    """
    from me2_scheduler.ops.index_ops import Verifier, render_report

    config = load_or_exit(config_path)
    with _guard(), _connected(config) as (store, index):
        verifier = Verifier(store, index, repair=repair, sample=sample)
        with _bar(store.counts_by_status()["active"], "checking MySQL's active avatars") as bar:
            verifier.check_active(bar.update)
        with _bar(verifier.member_count(), "checking Redis's due and inflight") as bar:
            verifier.check_members(bar.update)
    report = verifier.report
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(render_report(report))
    sys.exit(EXIT_OK if report.clean else EXIT_FAILURE)


# -- status and history -------------------------------------------------------------


@click.command("status")
@config_option
@json_option
@click.option("--next", "next_n", type=click.IntRange(0, 1000), default=10, show_default=True,
              help="How many of the next due avatars to list.")  # fmt: skip
def status(config_path: str, as_json: bool, next_n: int) -> None:
    """Avatars by status, auto-paused, queue sizes, next due, diary runs, the service."""
    from me2_scheduler.ops.status import collect, render
    from me2_scheduler.storage.diary_runs import DiaryRunStore
    from me2_scheduler.timefmt import Display

    config = load_or_exit(config_path)
    with _guard(), _connected(config) as (store, index):
        runs = DiaryRunStore(config.mysql)
        try:
            document = collect(config, store, index, runs, next_n=next_n)
        finally:
            runs.close()
    if as_json:
        _echo_json(document)
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
@click.option("--older-than", "age", required=True, callback=_age, metavar="AGE",
              help="Delete dispatches started longer ago than this: 30d, 12h, 90m.")  # fmt: skip
@click.option("--batch", type=click.IntRange(1, 100_000), default=5000, show_default=True,
              help="Rows deleted per transaction.")  # fmt: skip
def prune_history(config_path: str, as_json: bool, age: Any, batch: int) -> None:
    """Delete old dispatch history in small transactions; print how many rows went."""
    from me2_scheduler.ops.prune import cutoff, prune
    from me2_scheduler.storage.mysql import MysqlStore
    from me2_scheduler.timefmt import Display

    config = load_or_exit(config_path)
    before = cutoff(age)
    store = MysqlStore(config.mysql)
    with _guard():
        try:
            with _bar(store.count_history_before(before), "pruning history") as bar:
                deleted = prune(store, before, batch=batch, progress=bar.update)
        finally:
            store.close()
    shown = Display(config.timezone).format(before)
    if as_json:
        _echo_json({"deleted": deleted, "before": shown})
    else:
        click.echo(f"deleted {deleted} history rows started before {shown}")


# -- avatar -----------------------------------------------------------------------------


@click.group("avatar")
def avatar() -> None:
    """Call the Scheduler gRPC API for one avatar and print the answer."""


def _avatar_command(action: str) -> click.Command:
    """``avatar <action> ID``; ``history`` also takes ``--limit`` and ``--cursor``."""

    def command(avatar_id: int, target: str | None, config_path: str | None, as_json: bool,
                timeout_s: float, limit: int = 0, cursor: int = 0) -> None:  # fmt: skip
        resolved = _resolve_target(target, config_path)
        _call_avatar(resolved, action, avatar_id, as_json, timeout_s=timeout_s, limit=limit,
                     cursor=cursor)  # fmt: skip

    decorators: list[Callable[[Any], Any]] = [
        click.argument("avatar_id", type=int),
        click.option("--target", metavar="HOST:PORT",
                     help="The scheduler's gRPC address; default ListenOn of -f's config."),
        click.option("-f", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="Service YAML config, for the default --target."),
        json_option,
        click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=10.0,
                     show_default=True, help="Seconds to wait for the answer."),
    ]  # fmt: skip
    if action == "history":
        decorators += [
            click.option("--limit", type=click.IntRange(0, 100), default=0,
                         help="Entries per page (0: the server's default)."),
            click.option("--cursor", type=click.IntRange(min=0), default=0,
                         help="next_cursor of the previous page (0: newest first)."),
        ]  # fmt: skip
    for decorate in reversed(decorators):
        command = decorate(command)
    return click.command(action, help=_AVATAR_HELP[action])(command)


def _resolve_target(target: str | None, config_path: str | None) -> str:
    from me2_scheduler.ops.avatar import target_from_listen_on

    if target:
        return target
    if config_path:
        return target_from_listen_on(load_or_exit(config_path).listen_on)
    raise click.UsageError("--target HOST:PORT is required unless -f FILE is given")


def _call_avatar(target: str, action: str, avatar_id: int, as_json: bool, **kwargs: Any) -> None:
    from me2_scheduler.ops.avatar import call, render, to_dict

    try:
        response = call(target, action, avatar_id, **kwargs)
    except SchedulerError as exc:
        _fail(exc)
    if as_json:
        _echo_json(to_dict(response))
    if response.code != 0:
        click.echo(f"error: code {response.code}: {response.message}", err=True)
        sys.exit(EXIT_FAILURE)
    if not as_json:
        click.echo(render(response))
