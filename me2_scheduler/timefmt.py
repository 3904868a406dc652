"""Times as people read them: ``YYYY-MM-DD HH:MM:SS`` in the service time zone."""

from __future__ import annotations

from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def service_zone(name: str) -> tzinfo:
    """The zone ``Timezone`` names; "" means the server's local zone (as the seed says)."""
    if name:
        return ZoneInfo(name)
    local = datetime.now().astimezone().tzinfo
    assert local is not None  # astimezone() always attaches the local zone
    return local


class Display:
    """Formats aware datetimes for ScheduleInfo strings and log lines."""

    def __init__(self, zone_name: str = "") -> None:
        self.zone = service_zone(zone_name)

    def format(self, moment: datetime | None) -> str:
        """``YYYY-MM-DD HH:MM:SS`` in the service zone; "" for None (a NULL column)."""
        if moment is None:
            return ""
        return moment.astimezone(self.zone).strftime(TIME_FORMAT)
