"""An avatar's scheduling policy under this service's config: where its blanks come from.

A ``SchedulePolicy`` leaves its zone and interval bounds blank to mean the
service's (``Timezone``, ``ActionSchedule.Min/MaxIntervalHours``); this is
the one place they are filled in, for the dispatcher, the API and the CLI
alike. No I/O: only the zone database is read.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from me2_scheduler import policy
from me2_scheduler.config import Config
from me2_scheduler.schedule_policy import (
    PolicyError,
    SchedulePolicy,
    first_active_at,
    in_window,
    interval_hours,
    next_active_due,
    policy_zone,
)
from me2_scheduler.timefmt import service_zone

log = logging.getLogger("me2_scheduler.policy")


@dataclass(frozen=True)
class PolicyContext:
    """The service defaults a policy falls back on: its zone and interval bounds."""

    zone: ZoneInfo
    min_interval_hours: float
    max_interval_hours: float

    @classmethod
    def from_config(cls, config: Config) -> PolicyContext:
        """The defaults of ``config`` (``Timezone`` "" is the server's zone, by name)."""
        schedule = config.action_schedule
        return cls(
            service_zone(config.timezone),
            schedule.min_interval_hours,
            schedule.max_interval_hours,
        )

    @property
    def zone_name(self) -> str:
        """The service zone's IANA name."""
        return self.zone.key

    def zone_of(self, chosen: SchedulePolicy) -> ZoneInfo:
        """The zone the policy's windows are in: its own, else the service's.

        Raises PolicyError for a zone this host does not know (a policy
        stored by a host with a newer zone database).
        """
        return policy_zone(chosen, self.zone)

    def bounds(self, chosen: SchedulePolicy) -> tuple[float, float]:
        """The interval bounds, in hours of active time: the policy's, else the service's."""
        return interval_hours(chosen, self.min_interval_hours, self.max_interval_hours)

    def next_due(self, now: datetime, chosen: SchedulePolicy, rng: random.Random) -> datetime:
        """The next time after a success at ``now``: uniform in the bounds of active time.

        Raises PolicyError: PolicyNeverActive when the policy opens no window
        within the model's horizon, or a zone this host does not know.
        """
        low, high = self.bounds(chosen)
        zone = self.zone_of(chosen)
        return next_active_due(now, chosen, zone=zone, min_h=low, max_h=high, rng=rng)

    def next_due_or_default(
        self, now: datetime, chosen: SchedulePolicy, rng: random.Random, avatar_id: int
    ) -> datetime:
        """``next_due``; for a stored policy that cannot be drawn from (it never opens, or
        names a zone this host lacks), the service default's draw, with an error logged:
        a dispatch is recorded whatever its avatar's policy says."""
        try:
            return self.next_due(now, chosen, rng)
        except PolicyError as exc:
            log.error(
                "avatar %d: its scheduling policy gives no next time (%s); using the default",
                avatar_id,
                exc,
                extra={"avatar_id": avatar_id},
            )
            return policy.next_due(now, self.min_interval_hours, self.max_interval_hours, rng)

    def retry_due(self, now: datetime, chosen: SchedulePolicy, delay_s: float) -> datetime:
        """When a failed slot is tried again: ``delay_s`` after ``now``, moved on to the
        policy's next active second (the default policy: exactly ``policy.retry_due``)."""
        due = policy.retry_due(now, delay_s)
        try:
            return first_active_at(due, chosen, self.zone_of(chosen))
        except PolicyError:
            return due  # a policy that cannot be read or never opens: the plain retry

    def inside(self, moment: datetime, chosen: SchedulePolicy) -> bool:
        """Whether ``moment`` is in active time of the policy (always, by default)."""
        return in_window(moment, chosen, self.zone_of(chosen))

    def local_hour(self, moment: datetime, chosen: SchedulePolicy) -> int:
        """The hour of day (0-23) of ``moment`` in the policy's zone (service zone if bad)."""
        try:
            zone = self.zone_of(chosen)
        except PolicyError:
            zone = self.zone
        return moment.astimezone(zone).hour
