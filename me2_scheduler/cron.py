"""Cron expressions as robfig/cron v3's ``cron.New()`` reads them, and their fire times.

The Go service parsed ``DiarySchedule.CronExpression`` with robfig's standard
parser (five fields, ``@`` descriptors, ``@every <Go duration>``, a
``CRON_TZ=``/``TZ=`` prefix). This is a port of its parser.go, spec.go and
constantdelay.go, so an expression is accepted or rejected the same way and
fires at the same instants, quirks included: ``*/1`` still counts as a star in
the day-of-month/day-of-week rule, ``a/n`` runs to the maximum, an empty list
(``,``) parses but never fires, a time in a spring-forward gap is skipped and
one repeated at fall-back fires twice. One deliberate difference: a day a zone
skips whole (Pacific/Apia 2011-12-30) makes robfig loop forever, not us.
No clock is read: instants are arguments.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import reduce
from operator import or_
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

STAR_BIT = 1 << 63  # robfig's marker: the field was written ``*`` or ``?``
_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
# Go's unicode.IsSpace, used by strings.Fields / strings.TrimSpace (Python's
# str.split() also splits on \x1c-\x1f, which Go keeps inside a field).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
_GO_SPACE += "\u2028\u2029\u202f\u205f\u3000"
_FIELD_SEP = re.compile(f"[{re.escape(_GO_SPACE)}]+")
_ATOI = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class _Bounds:
    name: str
    lo: int
    hi: int
    names: dict[str, int] = field(default_factory=dict)


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MINUTE = _Bounds("minute", 0, 59)
_HOUR = _Bounds("hour", 0, 23)
_DOM = _Bounds("day-of-month", 1, 31)
_MONTH = _Bounds("month", 1, 12, {n: i for i, n in enumerate(_MONTHS, 1)})
_DOW = _Bounds("day-of-week", 0, 6, {n: i for i, n in enumerate(_DAYS)})


@dataclass(frozen=True)
class Schedule(ABC):
    """A parsed expression: ``expr`` as written, ``tz`` the zone its fields are read in."""

    expr: str
    tz: tzinfo

    @abstractmethod
    def next(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (aware), in ``tz``; None if none in 5 years.

        A fire time in a repeated fall-back hour never compares == to a datetime
        of another zone (PEP 495); compare instants in UTC. Raises ValueError
        if ``after`` is naive.
        """


@dataclass(frozen=True, repr=False)  # the base repr: expr and tz
class SpecSchedule(Schedule):
    """A five-field expression or descriptor, each field a bit set as in robfig's SpecSchedule."""

    minute: int
    hour: int
    dom: int
    month: int
    dow: int

    def next(self, after: datetime) -> datetime | None:
        found = _Search(self, _unix_floor(after) + 1).run()
        return None if found is None else datetime.fromtimestamp(found, self.tz)

    def day_matches(self, moment: datetime) -> bool:
        """robfig's dayMatches: AND when either day field has the star bit, else OR."""
        dom_ok = bool(self.dom >> moment.day & 1)
        dow_ok = bool(self.dow >> (moment.isoweekday() % 7) & 1)
        if (self.dom | self.dow) & STAR_BIT:
            return dom_ok and dow_ok
        return dom_ok or dow_ok


@dataclass(frozen=True, repr=False)  # the base repr: expr and tz
class ConstantDelaySchedule(Schedule):
    """``@every <duration>``: whole seconds (at least 1) after the given instant's second."""

    delay_seconds: int

    def next(self, after: datetime) -> datetime | None:
        return datetime.fromtimestamp(_unix_floor(after) + self.delay_seconds, self.tz)


def parse(expr: str, default_tz: tzinfo | str) -> Schedule:
    """Parse ``expr`` exactly as robfig/cron v3's standard parser does.

    ``default_tz`` (a tzinfo or an IANA name) is the zone fields are read in
    unless the expression starts with ``CRON_TZ=<zone> `` or ``TZ=<zone> ``; it
    plays the part of the Go process's local zone.
    Raises ValueError with one sentence naming the problem.
    """
    zone = default_tz if isinstance(default_tz, tzinfo) else _zone(default_tz)
    try:
        return _parse(expr, zone)
    except ValueError as e:
        raise ValueError(f"invalid cron expression {expr!r}: {e}") from None


def fire_times_between(schedule: Schedule, start: datetime, end: datetime) -> Iterator[datetime]:
    """Successive fire times t with start < t <= end, as the Go runner would see them.

    Raises ValueError if ``start`` is naive.
    """
    moment = schedule.next(start)
    while moment is not None and moment <= end:
        yield moment
        moment = schedule.next(moment)


# --- parsing (parser.go) ---------------------------------------------------------------------
def _parse(expr: str, zone: tzinfo) -> Schedule:
    if not expr:
        raise ValueError("it is empty")
    spec = expr
    if spec.startswith(("TZ=", "CRON_TZ=")):
        space = spec.find(" ")
        if space < 0:
            raise ValueError("the time zone prefix is not followed by a space and a schedule")
        name = spec[spec.index("=") + 1 : space]
        if name != "Local":  # Go's time.LoadLocation: "Local" is the process zone, "" is UTC
            zone = _zone(name or "UTC")
        spec = spec[space:].strip(_GO_SPACE)
    if spec in _DESCRIPTORS:
        spec = _DESCRIPTORS[spec]
    elif spec.startswith("@"):
        return _parse_every(expr, spec, zone)
    fields = [f for f in _FIELD_SEP.split(spec) if f]
    if len(fields) != 5:
        raise ValueError(f"it has {len(fields)} fields instead of 5 (no seconds field)")
    bounds = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)
    bits = [_get_field(text, b) for text, b in zip(fields, bounds, strict=True)]
    return SpecSchedule(expr, zone, *bits)


def _get_field(text: str, b: _Bounds) -> int:
    """A comma-separated list of ranges; empty items are dropped as Go's FieldsFunc does."""
    return reduce(or_, (_get_range(item, b) for item in text.split(",") if item), 0)


def _get_range(expr: str, b: _Bounds) -> int:
    """``*``, ``?``, ``n``, ``a-b``, each optionally ``/step``; ``n/step`` runs to the maximum."""
    range_and_step = expr.split("/")
    low_high = range_and_step[0].split("-")
    start, end, extra = _range_ends(expr, low_high, b)
    if len(range_and_step) > 2:
        raise ValueError(f"{b.name} item {expr!r} has more than one slash")
    step = 1
    if len(range_and_step) == 2:
        step = _number(range_and_step[1], b)
        if len(low_high) == 1:
            end = b.hi
        if step > 1:  # robfig keeps the star bit for */1: it still means "every"
            extra = 0
    if start < b.lo:
        raise ValueError(f"{b.name} value {start} is below the minimum {b.lo}")
    if end > b.hi:
        raise ValueError(f"{b.name} value {end} is above the maximum {b.hi}")
    if start > end:
        raise ValueError(f"{b.name} range {expr!r} starts after it ends")
    if step == 0:
        raise ValueError(f"{b.name} item {expr!r} has a step of 0")
    return sum(1 << i for i in range(start, end + 1, step)) | extra


def _range_ends(expr: str, low_high: list[str], b: _Bounds) -> tuple[int, int, int]:
    if low_high[0] in ("*", "?"):
        return b.lo, b.hi, STAR_BIT  # robfig ignores anything after "*-"
    start = _number(low_high[0], b, named=True)
    if len(low_high) > 2:
        raise ValueError(f"{b.name} item {expr!r} has more than one hyphen")
    end = start if len(low_high) == 1 else _number(low_high[1], b, named=True)
    return start, end, 0


def _number(text: str, b: _Bounds, named: bool = False) -> int:
    """A month or day name if ``named``, else Go's strconv.Atoi (sign, ASCII digits, int64) >= 0."""
    if named and text.lower() in b.names:
        return b.names[text.lower()]
    if not _ATOI.fullmatch(text) or not 0 <= int(text) < 1 << 63:
        raise ValueError(f"{b.name} item {text!r} is neither a number >= 0 nor a known name")
    return int(text)


# parser.go's parseDescriptor, written as the five fields that give the same bits.
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *"}
_DESCRIPTORS |= {"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *"}
_DESCRIPTORS |= {"@hourly": "0 * * * *"}


def _parse_every(expr: str, spec: str, zone: tzinfo) -> Schedule:
    if not spec.startswith("@every "):
        raise ValueError(f"{spec!r} is not a known descriptor")
    nanos = go_duration_ns(spec[len("@every ") :])
    # constantdelay.go's Every: below one second becomes one second; the rest is truncated.
    return ConstantDelaySchedule(expr, zone, max(nanos, 10**9) // 10**9)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"time zone {name!r} is unknown") from None


# --- Go's time.ParseDuration ------------------------------------------------------------------

_UNIT_NS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9}
_UNIT_NS.update({"m": 60 * 10**9, "h": 3600 * 10**9})
_UNIT = "|".join(sorted(_UNIT_NS, key=len, reverse=True))
_TERM = f"([0-9]+\\.?[0-9]*|\\.[0-9]+)({_UNIT})"
_DURATION = re.compile(f"[-+]?(?:{_TERM})+")
_NS_LIMIT = 1 << 63


def go_duration_ns(text: str) -> int:
    """Nanoseconds in a Go duration string (``90m``, ``1h30m``, ``1.5h``, ``-2s``, ``0``).

    Raises ValueError where Go's time.ParseDuration returns an error.
    """
    if text.lstrip("+-") == "0" and len(text) <= 2:
        return 0
    if not _DURATION.fullmatch(text):
        raise ValueError(f"duration {text!r} is not a Go duration such as 90m or 1h30m")
    total = sum(_term_ns(number, unit) for number, unit in re.findall(_TERM, text))
    if total > _NS_LIMIT - (text[0] != "-"):  # Go's int64: down to -2**63, up to 2**63 - 1
        raise ValueError(f"duration {text!r} is too long")
    return -total if text[0] == "-" else total


def _term_ns(number: str, unit: str) -> int:
    """One ``<number><unit>`` as Go adds it: whole part exact, fraction through float64."""
    whole, _, fraction = number.partition(".")
    scale = _UNIT_NS[unit]
    digits, divisor = 0, 1.0
    for char in fraction:  # Go's leadingFraction drops digits past int64 precision
        if digits * 10 + int(char) > _NS_LIMIT:
            break
        digits, divisor = digits * 10 + int(char), divisor * 10
    return int(whole or "0") * scale + int(float(digits) * (float(scale) / divisor))


# --- firing (spec.go) -------------------------------------------------------------------------
def _utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"time {moment.isoformat()} has no time zone")
    return moment.astimezone(timezone.utc)


def _unix_floor(moment: datetime) -> int:
    """Whole Unix seconds at or before ``moment`` (Go drops t.Nanosecond())."""
    return (_utc(moment) - _EPOCH) // _SECOND


def _offset(unix: int, zone: tzinfo) -> int:
    offset = datetime.fromtimestamp(unix, zone).utcoffset()
    return 0 if offset is None else offset // _SECOND


def _go_date(zone: tzinfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """Go's time.Date(y, mo, d, h, mi, s, 0, zone) as Unix seconds, out-of-range parts carried.

    Go resolves a wall time in a DST gap or overlap its own way (the offset in
    force at the wall time read as UTC, corrected once); zoneinfo's fold rule
    differs, so it is done here by hand.
    """
    y, mo = y + (mo - 1) // 12, (mo - 1) % 12 + 1
    local = (date(y, mo, 1).toordinal() - _EPOCH_DAY + d - 1) * 86400 + h * 3600 + mi * 60 + s
    return local - _offset(local - _offset(local, zone), zone)


class _Search:
    """One run of robfig's SpecSchedule.Next; ``t`` is Unix seconds, read in the schedule zone.

    Each ``_<field>`` step returns True where Go does ``goto WRAP``.
    """

    def __init__(self, spec: SpecSchedule, start: int) -> None:
        self.spec, self.t, self.added = spec, start, False

    @property
    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.t, self.spec.tz)

    def run(self) -> int | None:
        year_limit = self.wall.year + 5
        while self.wall.year <= year_limit:
            if self._month() or self._day() or self._hour() or self._minute() or self._second():
                continue
            return self.t
        return None

    def _reset(self, w: datetime, day: int, hour: int) -> None:
        if not self.added:
            self.added = True
            self.t = _go_date(self.spec.tz, w.year, w.month, day, hour)

    def _add_date(self, months: int = 0, days: int = 0) -> int:
        """Go's t.AddDate(0, months, days): the same wall clock on the shifted date."""
        w = self.wall
        return _go_date(
            self.spec.tz, w.year, w.month + months, w.day + days, w.hour, w.minute, w.second
        )

    def _month(self) -> bool:
        while not self.spec.month >> self.wall.month & 1:
            self._reset(self.wall, 1, 0)
            self.t = self._add_date(months=1)
            if self.wall.month == 1:
                return True
        return False

    def _day(self) -> bool:
        while not self.spec.day_matches(self.wall):
            self._reset(self.wall, self.wall.day, 0)
            before, self.t = self.t, self._add_date(days=1)
            if self.t <= before:  # a day the zone skips (Pacific/Apia 2011-12-30): Go hangs here
                self.t = before + 86400
            hour = self.wall.hour  # midnight may not exist (DST): robfig moves to the nearest
            if hour:
                self.t += (24 - hour) * 3600 if hour > 12 else -hour * 3600
            if self.wall.day == 1:
                return True
        return False

    def _hour(self) -> bool:
        while not self.spec.hour >> self.wall.hour & 1:
            self._reset(self.wall, self.wall.day, self.wall.hour)
            self.t += 3600
            if self.wall.hour == 0:
                return True
        return False

    def _minute(self) -> bool:
        while not self.spec.minute >> self.wall.minute & 1:
            if not self.added:
                self.added = True
                self.t -= self.t % 60  # Go's Truncate works on absolute time, not wall time
            self.t += 60
            if self.wall.minute == 0:
                return True
        return False

    def _second(self) -> bool:
        """The seconds field is always 0 here, so Go steps to the next minute and wraps."""
        if self.wall.second == 0:
            return False
        self.added = True
        while self.wall.second != 0:
            self.t += 1
        return True
