"""Times as people read them: ``YYYY-MM-DD HH:MM:SS`` in the service time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def service_zone(name: str) -> ZoneInfo:
    """The zone ``Timezone`` names; "" means the server's local zone (as the seed says).

    The local zone is resolved to its IANA name (as Go's ``time.Local``), not
    to today's fixed offset, so DST changes are followed.
    """
    from me2_scheduler.dsn import local_zone_name

    return ZoneInfo(name or local_zone_name())


class Display:
    """Formats aware datetimes for ScheduleInfo strings and log lines."""

    def __init__(self, zone_name: str = "") -> None:
        self.zone = service_zone(zone_name)

    def format(self, moment: datetime | None) -> str:
        """``YYYY-MM-DD HH:MM:SS`` in the service zone; "" for None (a NULL column)."""
        if moment is None:
            return ""
        return moment.astimezone(self.zone).strftime(TIME_FORMAT)
