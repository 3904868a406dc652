"""Time helpers, in one place: the current UTC time and epoch seconds both ways.

The Redis index scores avatars by whole epoch seconds (the resolution of the
seed's DATETIME columns); the store and the API work with aware datetimes.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def epoch(moment: datetime) -> int:
    """Whole epoch seconds of an aware datetime (the index's score), fraction dropped."""
    return int(moment.timestamp())


def from_epoch(seconds: float) -> datetime:
    """The aware UTC datetime of ``seconds`` since the epoch (a fraction is kept)."""
    return datetime.fromtimestamp(seconds, timezone.utc)
