"""Console: how long each page takes to render with N avatars in MySQL (the goal: < 200 ms).

N avatars are bulk-loaded (the target case is 1 M): most active and due over
the next day, 2 000 paused by failures with an error, 50 000 paused by users,
100 000 disabled, and 20 000 dispatches in the last five minutes of history.
The index is rebuilt, then every page is asked ``repeats`` times through
``App.handle``, in this process, as the console child answers the
supervisor's proxy (the relay over the Unix socket adds well under a
millisecond). The median and the slowest of each page are kept.

Wiring: ``runner`` calls ``console_pages(servers, count, repeats)`` for a
``console`` scenario and adds the figures to its results; the ``*_max_ms``
figures are the ones to hold against the 200 ms goal.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import replace

from me2_devkit.bench.env import Servers, Stage, staged
from me2_devkit.bench.scale import label
from me2_devkit.bench.seed import INSERT_CHUNK, insert_schedules, rebuild_index, utc_literal
from me2_scheduler.chunking import chunks
from me2_scheduler.config import ConsoleConf
from me2_scheduler.console.server import Console
from me2_scheduler.console.web import parse_request

GOAL_MS = 200.0
AUTO_PAUSED, USER_PAUSED, DISABLED, RECENT = 2_000, 50_000, 100_000, 20_000
_USER, _PASSWORD = "bench", "bench-password-123"
_CONSOLE = ConsoleConf(enabled=True, user=_USER, password=_PASSWORD)


def pages(count: int) -> dict[str, str]:
    """Figure name → the page asked, for ``count`` avatars."""
    middle = count // 2
    return {
        "overview": "/console/",
        "timeline_6h": "/console/timeline?hours=6",
        "paused": "/console/paused",
        "paused_all_page": f"/console/paused?reason=all&after={AUTO_PAUSED + USER_PAUSED // 2}",
        "paused_error_filter": "/console/paused?reason=failures&q=deadline",
        "avatar": f"/console/avatars/{middle}",
        "index": "/console/index",
    }


def _rows(count: int, now: int) -> Iterator[tuple[int, int]]:
    for avatar_id in range(1, count + 1):
        yield avatar_id, now + 60 + avatar_id % 86_400


def _load(stage: Stage, count: int) -> None:
    """The avatars, their states and a recent history (untimed setup)."""
    now = int(time.time())
    paused_user = AUTO_PAUSED + min(USER_PAUSED, count // 10)
    disabled = paused_user + min(DISABLED, count // 10)
    with stage.mysql() as conn, conn.cursor() as cur:
        insert_schedules(conn, _rows(count, now))
        cur.execute(
            "UPDATE avatar_schedules SET status = 'paused', pause_reason = 'failures',"
            " failed_count = 5, last_error = 'Action failed: deadline exceeded',"
            " last_failed_time = UTC_TIMESTAMP() WHERE avatar_id BETWEEN 1 AND %s",
            (AUTO_PAUSED,),
        )
        cur.execute(
            "UPDATE avatar_schedules SET status = 'paused', pause_reason = 'user'"
            " WHERE avatar_id BETWEEN %s AND %s",
            (AUTO_PAUSED + 1, paused_user),
        )
        cur.execute(
            "UPDATE avatar_schedules SET status = 'disabled' WHERE avatar_id BETWEEN %s AND %s",
            (paused_user + 1, disabled),
        )
        for batch in chunks(range(RECENT), INSERT_CHUNK):
            values = ",".join(
                f"({count - i % 1000}, 'auto', {utc_literal(now - i * 300 // RECENT)},"
                f" {utc_literal(now - i * 300 // RECENT)}, 'success', {i % 700},"
                f" '{count - i % 1000}:{(now - i) * 1000}')"
                for i in batch
            )
            cur.execute(
                "INSERT INTO avatar_schedule_history (avatar_id, `trigger`, planned_time,"
                " started_time, outcome, lag_ms, idempotency_key) VALUES " + values
            )
        for table in ("avatar_schedules", "avatar_schedule_history"):
            cur.execute(f"ANALYZE TABLE {table}")
            cur.fetchall()


def console_pages(servers: Servers, count: int, repeats: int) -> dict[str, float]:
    """Load ``count`` avatars and time every console page ``repeats`` times.

    Figures: ``console.<N>.<page>_ms`` (median) and ``..._max_ms`` (slowest),
    plus ``console.<N>.slowest_max_ms`` over all pages. Raises StoreError,
    RedisIndexError, RuntimeError (a page that did not answer 200).
    """
    prefix = f"console.{label(count)}"
    figures: dict[str, float] = {}
    with staged(servers, f"console-{label(count)}") as stage:
        _load(stage, count)
        rebuild_index(stage)
        console = Console(replace(stage.config, console=_CONSOLE))
        try:
            for name, target in pages(count).items():
                times = _timed_page(console, target, max(1, repeats))
                figures[f"{prefix}.{name}_ms"] = statistics.median(times)
                figures[f"{prefix}.{name}_max_ms"] = max(times)
        finally:
            console.close()
    figures[f"{prefix}.slowest_max_ms"] = max(
        value for key, value in figures.items() if key.endswith("_max_ms")
    )
    return figures


def _timed_page(console: Console, target: str, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` renders of ``target``, after one warm-up."""
    auth = console.app.auth
    cookie = f"me2_console={auth.new_session(_USER)}"
    headers = {"Accept": "text/html", "Host": "bench", "Cookie": cookie}
    took = []
    for attempt in range(repeats + 1):
        began = time.perf_counter()
        answer = console.app.handle(parse_request("GET", target, headers, b"", "/console"))
        elapsed = (time.perf_counter() - began) * 1000
        if answer.status != 200:
            raise RuntimeError(f"{target} answered {answer.status}: {answer.body[:300]!r}")
        if attempt:  # the first one warms the pools and the templates
            took.append(elapsed)
    return took
