"""Scheduling policies end to end: the real process tree on real MariaDB, Redis and the
Action simulator, with intervals of seconds and windows of a few seconds (``HH:MM:SS``).

Over about two minutes no dispatch of a windowed avatar starts outside its
windows, each interval is [min, max] seconds of *active* time, and avatars on
the default policy keep today's figures exactly: each planned time is the
previous dispatch's end plus 2 to 4 s of wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from me2_devkit.testing.stack import Simulator
from me2_scheduler.clock import utc_now
from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.schedule_policy import SchedulePolicy, in_window, parse_policy

from .fixtures_metrics import parse, value
from .fixtures_service import Running, start_service
from .support import wait_until

pytestmark = pytest.mark.timeout(300)

ZONE = ZoneInfo("Asia/Kolkata")  # UTC+05:30: windows on a half-hour offset from the service's
DEFAULT_AVATARS = range(1, 11)
WINDOWED_AVATARS = range(101, 111)
WINDOWS = 8  # a window of WINDOW_S every PERIOD_S, starting soon
WINDOW_S, PERIOD_S = 5, 15
MIN_S, MAX_S = 2, 4  # the service interval (ActionSchedule), in seconds
UTC = timezone.utc


@pytest.fixture
def running(tmp_path, mariadb, redis_server, database, redis_key) -> Iterator[Running]:
    action = Simulator("action", tmp_path).start()
    try:
        intervals = {"min_h": MIN_S / 3600, "max_h": MAX_S / 3600}
        service = start_service(
            tmp_path, mariadb, redis_server, database, redis_key, action, **intervals
        )
        try:
            yield service
        finally:
            service.service.stop()
    finally:
        action.stop()


def windows_from(first: datetime) -> list[dict[str, str]]:
    """``WINDOWS`` windows of ``WINDOW_S`` every ``PERIOD_S`` from ``first``, local HH:MM:SS."""
    starts = [first + timedelta(seconds=PERIOD_S * n) for n in range(WINDOWS)]
    return [
        {
            "start": start.astimezone(ZONE).strftime("%H:%M:%S"),
            "end": (start + timedelta(seconds=WINDOW_S)).astimezone(ZONE).strftime("%H:%M:%S"),
        }
        for start in starts
    ]


def successes(running: Running, avatar_id: int) -> list[tuple[datetime, datetime, datetime]]:
    """``(planned, started, finished)`` of each successful dispatch, aware UTC, in order."""
    rows = running.query(
        "SELECT planned_time, started_time, finished_time FROM avatar_schedule_history"
        " WHERE avatar_id = %s AND outcome = 'success' ORDER BY id",
        avatar_id,
    )
    return [tuple(t.replace(tzinfo=UTC) for t in row) for row in rows]


def active_seconds(begin: datetime, end: datetime, chosen: SchedulePolicy) -> int:
    """Whole seconds of [begin, end) inside the policy's windows (rate 1 everywhere)."""
    steps = int((end - begin).total_seconds())
    return sum(in_window(begin + timedelta(seconds=s), chosen, ZONE) for s in range(steps))


def next_time(running: Running, avatar_id: int) -> datetime:
    return running.row(avatar_id)["next_schedule_time"].replace(tzinfo=UTC)


def test_no_dispatch_starts_outside_its_windows_and_the_default_keeps_todays_figures(
    running: Running,
) -> None:
    stub = running.stub()
    running.enable(*DEFAULT_AVATARS, *WINDOWED_AVATARS)
    first = utc_now().replace(microsecond=0) + timedelta(seconds=10)
    document = {"time_zone": ZONE.key, "windows": windows_from(first)}
    chosen = parse_policy(document)
    request = pb.SetSchedulePoliciesRequest(
        avatar_ids=list(WINDOWED_AVATARS), policy=pb.SchedulePolicy(**_message_fields(document))
    )
    reply = stub.SetSchedulePolicies(request, timeout=10)
    assert (reply.code, reply.updated) == (0, len(WINDOWED_AVATARS)), reply.message
    in_force = utc_now().replace(microsecond=0) + timedelta(seconds=1)
    last_end = first + timedelta(seconds=PERIOD_S * (WINDOWS - 1) + WINDOW_S)

    # Done when every windowed avatar's next time is past today's last window (tomorrow's).
    wait_until(
        lambda: all(next_time(running, a) > last_end for a in WINDOWED_AVATARS),
        (last_end - utc_now()).total_seconds() + 60,
        "every windowed avatar to be past its last window of today",
    )

    dispatched = 0
    for avatar_id in WINDOWED_AVATARS:
        done = [d for d in successes(running, avatar_id) if d[1] >= in_force]
        assert len(done) >= WINDOWS, (avatar_id, done)  # ~1.7 a window on average
        dispatched += len(done)
        for planned, started, _ in done:
            assert in_window(planned, chosen, ZONE), (avatar_id, planned)
            assert in_window(started, chosen, ZONE), (avatar_id, planned, started)
        for (_, _, finished), (planned, _, _) in pairwise(done):
            # The interval is MIN_S..MAX_S seconds of active time, however long in wall time.
            assert MIN_S <= active_seconds(finished, planned, chosen) <= MAX_S, avatar_id

    for avatar_id in DEFAULT_AVATARS:
        done = successes(running, avatar_id)
        assert len(done) >= 10, avatar_id
        for (_, _, finished), (planned, _, _) in pairwise(done):
            assert MIN_S <= (planned - finished).total_seconds() <= MAX_S, avatar_id

    samples = parse(running.scrape())
    hours = {d[1].astimezone(ZONE).hour for a in WINDOWED_AVATARS for d in successes(running, a)}
    counted = sum(
        value(samples, "scheduler_dispatch_local_hour_total", hour=str(h)) or 0 for h in hours
    )
    assert counted >= dispatched  # the default avatars count in UTC hours, never these
    assert all(
        value(samples, "scheduler_dispatch_local_hour_total", hour=str(h)) is not None
        for h in range(24)
    )


def _message_fields(document: dict) -> dict:
    return {
        "time_zone": document["time_zone"],
        "windows": [pb.ActiveWindow(**window) for window in document["windows"]],
    }
