"""What the delay index tests share: lease lengths and views of the index's sets."""

from __future__ import annotations

from me2_scheduler.storage.index import DelayIndex

LONG_LEASE = 600.0
FLOAT_SLACK = 0.001  # epoch seconds as doubles: ~2e-7 s resolution, not exact


def due_members(index: DelayIndex) -> dict[int, float]:
    """``due`` as avatar_id -> score."""
    return {int(m): s for m, s in index.client.zrange(index.keys.due, 0, -1, withscores=True)}


def inflight_members(index: DelayIndex) -> set[int]:
    return {int(m) for m in index.client.zrange(index.keys.inflight, 0, -1)}
