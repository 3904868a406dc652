"""Times as people read them, in the service zone."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from me2_scheduler.timefmt import Display, service_zone


def test_an_empty_timezone_is_the_hosts_named_zone_so_dst_is_followed(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    zone = service_zone("")
    assert zone == ZoneInfo("America/New_York")
    summer = datetime(2026, 7, 1, 12, tzinfo=timezone.utc).astimezone(zone)
    winter = datetime(2026, 12, 1, 12, tzinfo=timezone.utc).astimezone(zone)
    assert (summer.hour, winter.hour) == (8, 7)


def test_display_formats_in_the_service_zone_and_null_as_empty():
    display = Display("Asia/Shanghai")
    assert display.format(datetime(2026, 1, 1, 14, 0, tzinfo=timezone.utc)) == "2026-01-01 22:00:00"
    assert display.format(None) == ""
