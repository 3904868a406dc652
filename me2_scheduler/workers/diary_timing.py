"""When diary runs fire: the catch-up on start, fire times missed for too long, the sleep.

Plain values only: no clock is read and nothing is stored. ``DiaryScheduler``
(``workers.diary``) passes the time in and does the I/O, so every decision
here is tested without MySQL, a Diary service or a wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from me2_scheduler.config import DiaryScheduleConf
from me2_scheduler.cron import ConstantDelaySchedule, Schedule, fire_times_between

WAKE_SLACK_S = 60.0  # a fire time this late is still run (slow wake-up, a long previous run)
MAX_RECHECK_S = 30.0  # the loop looks for abandoned runs at least this often
MIN_HEARTBEAT_S = 0.05
MIN_RECHECK_S = 0.1


@dataclass(frozen=True)
class Intervals:
    """The diary role's periods and limits, derived once from ``DiarySchedule``."""

    grace: timedelta  # a fire time missed while down runs on start when at most this old
    tolerance: timedelta  # a fire time at most this late runs: the grace, at least WAKE_SLACK_S
    stale: timedelta  # a running run nobody heartbeats for this long may be taken over
    heartbeat_s: float  # how often the owner of a run heartbeats
    recheck_s: float  # the longest sleep between two looks for due or abandoned runs

    @classmethod
    def of(cls, conf: DiaryScheduleConf) -> Intervals:
        """The intervals of ``conf``: heartbeat four times, recheck twice per stale period."""
        grace_s, stale_s = conf.misfire_grace_seconds, conf.stale_run_seconds
        return cls(
            grace=timedelta(seconds=grace_s),
            tolerance=timedelta(seconds=max(grace_s, WAKE_SLACK_S)),
            stale=timedelta(seconds=stale_s),
            heartbeat_s=max(MIN_HEARTBEAT_S, stale_s / 4),
            recheck_s=max(MIN_RECHECK_S, min(MAX_RECHECK_S, stale_s / 2)),
        )


@dataclass(frozen=True)
class Due:
    """What ``FireTimes.due`` found at one moment."""

    fire: datetime | None  # the fire time to run now, if any
    missed: datetime | None = None  # the first fire time given up on: too late to run


class FireTimes:
    """The fire times of ``schedule`` that are due, remembering which were dealt with.

    The first look is the misfire catch-up: a fire time up to ``grace``
    before it is due (``@every`` has no fixed fire times, so it never misses
    one, as in robfig). Afterwards a fire time is due until ``tolerance``
    after it; one later than that is given up.
    """

    def __init__(self, schedule: Schedule, intervals: Intervals) -> None:
        self.schedule = schedule
        self._grace = intervals.grace
        self._tolerance = intervals.tolerance
        self._recheck_s = intervals.recheck_s
        self.handled: datetime | None = None  # fire times up to here are dealt with

    def due(self, now: datetime) -> Due:
        """The latest fire time after the handled ones and at or before ``now``.

        A fire time found is due until ``handled`` is called with it; fire
        times older than the tolerance are given up for good.
        """
        if self.handled is None:
            is_every = isinstance(self.schedule, ConstantDelaySchedule)
            self.handled = now if is_every else now - self._grace
        floor = now - self._tolerance
        missed = None
        if self.handled < floor:
            missed = next(fire_times_between(self.schedule, self.handled, floor), None)
            self.handled = floor
        fire = max(fire_times_between(self.schedule, self.handled, now), default=None)
        return Due(fire, missed)

    def dealt_with(self, fire: datetime) -> None:
        """Note that ``fire`` (and every earlier fire time) ran or was found not ours."""
        self.handled = fire

    def seconds_to_wait(self, now: datetime) -> float:
        """Seconds from ``now`` until the next fire time, at most the recheck interval."""
        upcoming = self.schedule.next(self.handled or now)
        if upcoming is None:
            return self._recheck_s
        return max(0.0, min((upcoming - now).total_seconds(), self._recheck_s))

    def run_date_of(self, fire_time: datetime) -> date:
        """The diary date of a fire time: its date in the cron's zone."""
        return fire_time.astimezone(self.schedule.tz).date()
