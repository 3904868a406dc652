"""The JSON form of a scheduling policy: what MySQL stores and what the API and CLI take.

``{"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "23:00",
"days": ["mon", "tue"]}], "min_interval_hours": 2, "max_interval_hours": 6,
"day_rates": {"sat": 2}, "quiet_dates": ["2026-12-25"]}``: every key optional,
``days`` absent = every day, a rate absent = 1; ``weekdays`` and ``weekend``
stand for their days in ``days`` and ``day_rates``. ``policy_to_dict`` writes
only what differs from DEFAULT (DEFAULT is ``{}``), naming single days.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, time
from typing import Any

from me2_scheduler.schedule_policy_model import (
    ALL_DAYS,
    DAY_NAMES,
    PolicyError,
    SchedulePolicy,
    Window,
    policy_problems,
    time_text,
)

_HHMM = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")  # ASCII digits only
_DAY_GROUPS = {"weekdays": frozenset(range(5)), "weekend": frozenset((5, 6))}
_DAYS_BY_NAME = {name: frozenset((i,)) for i, name in enumerate(DAY_NAMES)} | _DAY_GROUPS
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]{1,40}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_policy(doc: Mapping[str, Any]) -> SchedulePolicy:
    """The policy of its JSON form (every key optional; ``{}`` is DEFAULT).

    Raises PolicyError naming every bad field, one sentence each: a wrong
    type, an unknown key, zone, time, day name or date, a value out of
    range, min above max, a policy that never opens.
    """
    if not isinstance(doc, Mapping):
        raise PolicyError("policy", f"must be a JSON object, got {_shown(doc)}")
    problems: list[tuple[str, str]] = []
    fields: dict[str, Any] = {}
    for key, value in doc.items():
        reader = _READERS.get(key)
        if reader is None:
            field = _key_field("policy", key).removeprefix("policy.")
            problems.append((field, f"is not a policy field; use {', '.join(_READERS)}"))
            continue
        try:
            fields[key] = reader(value)
        except PolicyError as e:
            problems.extend(e.problems)
    p = SchedulePolicy(**fields)
    problems += policy_problems(p)
    if problems:
        raise PolicyError.of(problems)
    return p


def policy_to_dict(p: SchedulePolicy) -> dict[str, Any]:
    """The JSON form of ``p``, only what differs from DEFAULT; ``parse_policy`` reads it back."""
    doc: dict[str, Any] = {}
    if p.time_zone:
        doc["time_zone"] = p.time_zone
    if p.windows:
        doc["windows"] = [_window_dict(w) for w in p.windows]
    for name in ("min_interval_hours", "max_interval_hours"):
        if getattr(p, name) is not None:
            doc[name] = _number(getattr(p, name))
    rates = {DAY_NAMES[i]: _number(r) for i, r in enumerate(p.day_rates) if r != 1.0}
    if rates:
        doc["day_rates"] = rates
    if p.quiet_dates:
        doc["quiet_dates"] = [d.isoformat() for d in p.quiet_dates]
    return doc


def _window_dict(w: Window) -> dict[str, Any]:
    doc: dict[str, Any] = {"start": time_text(w.start), "end": time_text(w.end)}
    if w.days != ALL_DAYS:
        doc["days"] = [DAY_NAMES[d] for d in sorted(w.days) if 0 <= d < 7]
    return doc


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _read_zone(value: Any) -> str:
    if not isinstance(value, str):
        raise PolicyError(
            "time_zone", f"must be a zone name such as 'Asia/Shanghai', got {_shown(value)}"
        )
    return value


def _read_windows(value: Any) -> tuple[Window, ...]:
    if not isinstance(value, list):
        raise PolicyError("windows", f"must be a list of windows, got {_shown(value)}")
    windows, problems = [], []
    for i, item in enumerate(value):
        try:
            windows.append(_read_window(item, f"windows[{i}]"))
        except PolicyError as e:
            problems.extend(e.problems)
    if problems:
        raise PolicyError.of(problems)
    return tuple(windows)


def _read_window(item: Any, name: str) -> Window:
    if not isinstance(item, Mapping):
        raise PolicyError(
            name,
            f'must be an object such as {{"start": "08:00", "end": "23:00"}}, got {_shown(item)}',
        )
    problems = [
        (_key_field(name, k), "is not a window field; use start, end, days")
        for k in item
        if k not in ("start", "end", "days")
    ]
    parts: dict[str, Any] = {}
    for key, read in (("start", _read_time), ("end", _read_time), ("days", _read_days)):
        try:
            if key in item:
                parts[key] = read(item[key], f"{name}.{key}", key == "end")
            elif key != "days":
                raise PolicyError(f"{name}.{key}", "is missing; give a time HH:MM")
        except PolicyError as e:
            problems.extend(e.problems)
    if problems:
        raise PolicyError.of(problems)
    return Window(**parts)


def _read_time(value: Any, name: str, is_end: bool) -> time:
    if is_end and value in ("24:00", "24:00:00"):
        return time(0)  # the end of the day: 08:00-24:00 is 08:00-00:00
    found = _HHMM.fullmatch(value) if isinstance(value, str) else None
    try:
        if found:
            return time(*(int(part or 0) for part in found.groups()))
    except ValueError:
        pass  # 25:00, 08:60
    raise PolicyError(name, f"{_shown(value)} is not a time HH:MM or HH:MM:SS")


def _read_days(value: Any, name: str, _: bool) -> frozenset[int]:
    if not isinstance(value, list):
        raise PolicyError(
            name, f'must be a list of day names such as ["sat", "sun"], got {_shown(value)}'
        )
    return frozenset().union(*(_day_numbers(day, f"{name}[{i}]") for i, day in enumerate(value)))


def _day_numbers(value: Any, name: str) -> frozenset[int]:
    """The weekdays a day name (``mon``) or group (``weekdays``, ``weekend``) stands for."""
    found = _DAYS_BY_NAME.get(value.lower()) if isinstance(value, str) else None
    if found is None:
        names = ", ".join(_DAYS_BY_NAME)
        raise PolicyError(name, f"{_shown(value)} is not a day name; use {names}")
    return found


def _read_hours(name: str) -> Callable[[Any], float]:
    return lambda value: _read_number(value, name, "a number of hours")


def _read_number(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(name, f"must be {what}, got {_shown(value)}")
    return float(value)


def _read_rates(value: Any) -> tuple[float, ...]:
    if not isinstance(value, Mapping):
        raise PolicyError(
            "day_rates",
            f'must be an object of day name to rate such as {{"sat": 2}}, got {_shown(value)}',
        )
    rates, problems = [1.0] * 7, []
    # A group first, so a day named on its own wins: {"weekend": 2, "sun": 3}.
    for key, rate in sorted(value.items(), key=lambda item: item[0] not in _DAY_GROUPS):
        try:
            field = _key_field("day_rates", key)
            for day in _day_numbers(key, field):
                rates[day] = _read_number(rate, field, "a rate such as 2")
        except PolicyError as e:
            problems.extend(e.problems)
    if problems:
        raise PolicyError.of(problems)
    return tuple(rates)


def _read_dates(value: Any) -> tuple[date, ...]:
    if not isinstance(value, list):
        raise PolicyError(
            "quiet_dates", f'must be a list of dates such as ["2026-12-25"], got {_shown(value)}'
        )
    dates, problems = [], []
    for i, item in enumerate(value):
        try:
            if not isinstance(item, str) or not _ISO_DATE.fullmatch(item):
                raise ValueError
            dates.append(date.fromisoformat(item))
        except ValueError:
            problems.append((f"quiet_dates[{i}]", f"{_shown(item)} is not a date YYYY-MM-DD"))
    if problems:
        raise PolicyError.of(problems)
    return tuple(dates)


_READERS: dict[str, Callable[[Any], Any]] = {
    "time_zone": _read_zone,
    "windows": _read_windows,
    "min_interval_hours": _read_hours("min_interval_hours"),
    "max_interval_hours": _read_hours("max_interval_hours"),
    "day_rates": _read_rates,
    "quiet_dates": _read_dates,
}


def _key_field(parent: str, key: Any) -> str:
    """``parent.key`` for a plain key, ``parent["odd key"]`` for any other."""
    plain = isinstance(key, str) and _PLAIN_KEY.fullmatch(key)
    return f"{parent}.{key}" if plain else f"{parent}[{_shown(key)}]"


def _shown(value: Any) -> str:
    """``value`` as JSON, cut to 40 characters (a message quotes, it does not dump)."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 40 else text[:39] + "…"
