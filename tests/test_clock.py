"""clock's epoch helpers: whole seconds of an aware time, and no naive time read as local."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from me2_scheduler.clock import epoch, from_epoch

SHANGHAI = timezone(timedelta(hours=8))


@pytest.mark.parametrize("microsecond", [0, 1, 500_000, 999_999])
def test_epoch_is_the_whole_second_the_moment_falls_in(microsecond: int) -> None:
    moment = datetime(2026, 12, 6, 4, 0, 0, microsecond, tzinfo=timezone.utc)
    assert epoch(moment) == 1796529600
    assert from_epoch(epoch(moment)) == moment.replace(microsecond=0)


def test_epoch_is_the_same_instant_in_any_zone() -> None:
    moment = datetime(2026, 12, 6, 12, 0, 0, tzinfo=SHANGHAI)
    assert epoch(moment) == epoch(moment.astimezone(timezone.utc)) == 1796529600


def test_a_naive_time_is_refused_not_read_as_the_hosts_local_time() -> None:
    with pytest.raises(ValueError, match="2026-12-06T04:00:00 has no time zone"):
        epoch(datetime(2026, 12, 6, 4, 0, 0))
