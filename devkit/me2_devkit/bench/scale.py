"""Scale: the index's operations at 10 k, 100 k and 1 M avatars.

N active avatars are bulk-loaded; a few batches of them are due (the rest due
over the next day), so a claim takes ``CLAIM_BATCH`` due members out of N, the
case the design must keep flat. Each operation is timed ``repeats`` times on
the same data and the median kept; claims are cheap and noisy, so they get at
least ``MIN_CLAIMS``. Memory is Redis ``used_memory`` before and after the
first rebuild, and MySQL's data + index length after ANALYZE.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from me2_devkit.bench.env import Servers, Stage, staged
from me2_devkit.bench.seed import insert_schedules, rebuild_index, table_bytes, verify_index
from me2_scheduler.clock import from_epoch
from me2_scheduler.storage.reconcile import SWEEP_PAGE, sweep

CLAIM_BATCH = 500
MIN_CLAIMS = 5
LEASE_S = 30
SWEEP_GRACE_S = 30


def label(count: int) -> str:
    """10000 → ``10k``, 1000000 → ``1M``."""
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1_000 and count % 1_000 == 0:
        return f"{count // 1_000}k"
    return str(count)


def _rows(count: int, due_now: int, now: int) -> Iterator[tuple[int, int]]:
    for avatar_id in range(1, count + 1):
        if avatar_id <= due_now:
            yield avatar_id, now - 120
        else:  # due over the next day, never during the measurement
            yield avatar_id, now + 3600 + avatar_id % 86_400


def _timed(action: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls, and the last call's result."""
    took, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = action()
        took.append(time.perf_counter() - began)
    return statistics.median(took), result


def _used_memory(stage: Stage) -> int:
    return int(stage.index.client.info("memory")["used_memory"])


def _claim(stage: Stage, batch: int) -> int:
    claimed = stage.index.claim_due(batch, LEASE_S)
    if claimed != batch:
        raise RuntimeError(f"a claim took {claimed} avatars, {batch} were due")
    return claimed


def _overdue_page(stage: Stage) -> int:
    before = from_epoch(stage.index.now() - SWEEP_GRACE_S)
    return len(stage.store.overdue(before, limit=SWEEP_PAGE))


def scale(servers: Servers, count: int, repeats: int) -> dict[str, float]:
    """Load ``count`` avatars and time claim, rebuild, verify and sweep on them.

    Raises StoreError, RedisIndexError, RuntimeError (a claim that took fewer
    than were due: the setup is wrong).
    """
    prefix = f"scale.{label(count)}"
    claims = max(MIN_CLAIMS, repeats)
    batch = min(CLAIM_BATCH, count // (2 * (claims + 1)))  # a tiny smoke run has fewer than 500
    with staged(servers, f"scale-{label(count)}") as stage:
        began = time.perf_counter()
        with stage.mysql() as conn:
            insert_schedules(conn, _rows(count, batch * (claims + 1), int(time.time())))
            load_s = time.perf_counter() - began
            mysql_bytes = table_bytes(conn, stage.database, "avatar_schedules")
        memory_before = _used_memory(stage)
        rebuild_times, redis_bytes, rebuilt = [], 0, 0
        for attempt in range(repeats):
            began = time.perf_counter()
            rebuilt = rebuild_index(stage)
            rebuild_times.append(time.perf_counter() - began)
            if attempt == 0:  # later rebuilds free the old set lazily: measure the first
                redis_bytes = _used_memory(stage) - memory_before
        rebuild_s = statistics.median(rebuild_times)
        verify_s, differences = _timed(lambda: verify_index(stage), repeats)
        overdue_s, overdue = _timed(lambda: _overdue_page(stage), max(MIN_CLAIMS, repeats))
        sweep_s, _ = _timed(lambda: sweep(stage.store, stage.index, SWEEP_GRACE_S), repeats)
        _claim(stage, batch)  # untimed: the first claim pays for loading the script
        claim_s, _ = _timed(lambda: _claim(stage, batch), claims)
    return {
        f"{prefix}.load_s": load_s,
        f"{prefix}.rows": float(rebuilt),
        f"{prefix}.claim_ms": claim_s * 1000,
        f"{prefix}.rebuild_s": rebuild_s,
        f"{prefix}.verify_s": verify_s,
        f"{prefix}.verify_differences": float(differences),
        f"{prefix}.overdue_page_ms": overdue_s * 1000,
        f"{prefix}.overdue_rows": float(overdue),
        f"{prefix}.sweep_ms": sweep_s * 1000,
        f"{prefix}.redis_mib_per_1M": redis_bytes / 1024 / 1024 * 1_000_000 / count,
        f"{prefix}.mysql_mib": mysql_bytes / 1024 / 1024,
    }
