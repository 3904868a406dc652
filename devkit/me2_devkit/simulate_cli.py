"""``me2-dev simulate action|diary``: run a simulator as a process until SIGTERM.

The process serves on a ``grpc.aio`` server (``simulators_aio``): its calls
in flight are tasks on one loop, not sleeping threads, which spends less CPU
per call beside the service the benchmark measures. ``--max-concurrency``
is still accepted (scripts pass it) but bounds nothing under aio; the
simulator's ``--capacity`` is what limits the calls handled at once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from me2_devkit.simulators import (
    DEFAULT_MAX_CONCURRENCY,
    ActionSimulator,
    DiarySimulator,
    _Simulator,
)
from me2_devkit.simulators_aio import serve_aio


def run_until_signalled(
    servicer: _Simulator, listen: str, max_workers: int = DEFAULT_MAX_CONCURRENCY
) -> None:
    """Serve on a ``grpc.aio`` server, print the listening line, and stop gracefully on
    SIGTERM or SIGINT.

    ``max_workers`` is kept for callers that pass it and bounds nothing: an
    aio call in flight holds no thread.
    """
    del max_workers
    asyncio.run(_serve_until_signalled(servicer, listen))


async def _serve_until_signalled(servicer: _Simulator, listen: str) -> None:
    """The process's one loop: serve until a signal, then stop as ``serve``'s server does."""
    stop = asyncio.Event()
    # The handlers only record the signal; the loop does the stopping.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        running = await serve_aio(servicer, listen)
    except RuntimeError as exc:  # grpc cannot bind the address
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None
    click.echo(f"{servicer.name} simulator listening on {running.address}")
    sys.stdout.flush()
    await stop.wait()
    await running.stop(grace=2.0)
    await _let_grpc_finish()


async def _let_grpc_finish(timeout_s: float = 1.0) -> None:
    """Wait for the loop's other tasks, grpc's own for the calls the stop cancelled.

    They end a few loop turns after ``stop`` returns; ``asyncio.run`` would
    cancel them instead, and grpc prints each such cancellation to stderr.
    """
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=timeout_s)


def _avatar_ids(ctx: click.Context, param: click.Parameter, value: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of avatar ids") from None


_listen = click.option("--listen", default="127.0.0.1:0", show_default=True, help="host:port")
_latency = click.option("--latency-ms", type=click.IntRange(min=0), default=0, show_default=True)
_fail_rate = click.option("--fail-rate", type=click.FloatRange(0.0, 1.0), default=0.0)
_fail_avatars = click.option(
    "--fail-avatars", default="", callback=_avatar_ids, help="Comma-separated ids that always fail."
)
_seed = click.option("--seed", type=int, default=None, help="Random seed (reproducible runs).")
_capacity = click.option(
    "--capacity",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Most calls handled at once; beyond it RESOURCE_EXHAUSTED at once (0: unlimited).",
)
_max_concurrency = click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CONCURRENCY,
    show_default=True,
    help="Accepted for old scripts; bounds nothing (the aio server holds no thread per call).",
)


_hang_avatars = click.option(
    "--hang-avatars", default="", callback=_avatar_ids, help="Ids whose calls never answer."
)


def register(group: click.Group) -> None:
    """Add ``simulate action`` and ``simulate diary`` to ``group``."""
    _add_simulator_command(
        group,
        "action",
        ActionSimulator,
        "Serve action.Action/ScheduleAction (and simulator.Control) until SIGTERM.",
    )
    _add_simulator_command(
        group,
        "diary",
        DiarySimulator,
        "Serve diary.Diary/GenerateAvatarDiary (and simulator.Control) until SIGTERM.",
        _hang_avatars,
    )


def _add_simulator_command(
    group: click.Group,
    name: str,
    simulator: type[_Simulator],
    text: str,
    *extra_options: Callable[[Callable[..., None]], Callable[..., None]],
) -> None:
    """Add ``name``: serve a ``simulator`` built from the behaviour options given."""

    def command(listen: str, max_concurrency: int, **behaviour: Any) -> None:
        run_until_signalled(simulator(**behaviour), listen, max_concurrency)

    options = (_listen, _latency, _fail_rate, _fail_avatars, *extra_options, _seed, _capacity)
    for option in reversed((*options, _max_concurrency)):  # the last applied is listed first
        command = option(command)
    group.command(name, help=text)(command)
