"""``me2-scheduler prune-history``: delete old dispatch history in small transactions.

The same deletion the service runs on its own for ``History.RetentionDays``
(``MysqlStore.prune_history``): ``batch`` rows per transaction, so a large
backlog never becomes one giant transaction holding locks and undo log.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from me2_scheduler.clock import utc_now
from me2_scheduler.dsn import parse_go_duration
from me2_scheduler.ops import Progress
from me2_scheduler.storage.mysql import MysqlStore

DEFAULT_BATCH = 5000
_DAYS = re.compile(r"(\d+(?:\.\d+)?)d")


def parse_age(text: str) -> timedelta:
    """A positive age: ``30d``, ``12h`` or any Go duration (``90m``, ``1h30m``).

    Raises ValueError for anything else, zero or negative.
    """
    text = text.strip()
    days = _DAYS.fullmatch(text)
    try:
        seconds = float(days[1]) * 86400 if days else parse_go_duration(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an age such as 30d, 12h or 90m") from None
    if seconds <= 0:
        raise ValueError(f"{text!r} must be positive")
    return timedelta(seconds=seconds)


def cutoff(age: timedelta, now: datetime | None = None) -> datetime:
    """The instant ``age`` before ``now`` (default: the current time)."""
    return (now or utc_now()) - age


def prune(
    store: MysqlStore,
    before: datetime,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> int:
    """Delete history rows started before ``before``, ``batch`` per transaction.

    Returns how many were deleted; ``progress`` gets each committed batch's
    count. Raises ValueError for batch < 1, StoreError when MySQL fails.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return store.prune_history(before, batch, progress=progress)
