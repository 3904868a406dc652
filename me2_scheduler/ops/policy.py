"""Operator tasks on scheduling policies, behind ``me2-scheduler avatar policy`` and ``policy``.

A policy is given as its JSON form (a file, what ``avatar policy get``
prints) or as command-line options, read here into that form, checked with
``schedule_policy.parse_policy`` before anything is sent, and sent as the
API's ``SchedulePolicy`` message. ``set_many`` sends one
``SetSchedulePolicies`` call per ``MAX_IDS_PER_CALL`` avatars. ``preview``
draws the next times an avatar would get, as the dispatcher draws them.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.message import Message

from me2_scheduler.chunking import chunks
from me2_scheduler.errors import SchedulerError
from me2_scheduler.ops.avatar import DEFAULT_TIMEOUT_S, invoke, key_values
from me2_scheduler.policy_context import PolicyContext
from me2_scheduler.protos import scheduler_pb2
from me2_scheduler.rpc_server.convert import policy_document, policy_message
from me2_scheduler.schedule_policy import SchedulePolicy, parse_policy, policy_to_dict

MAX_IDS_PER_CALL = 1000  # the API's limit per SetSchedulePolicies call
LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S %Z %a"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(?P<start>[\d:]+)\s*-\s*(?P<end>[\d:]+)\s*(?:@\s*(?P<days>.+))?$")


class PolicyInputError(SchedulerError):
    """A policy, or a list of avatar ids, given on the command line that cannot be read."""


# -- reading what the operator gave ----------------------------------------------------


def read_document(path: str) -> dict[str, Any]:
    """The JSON object in the file at ``path``; raise PolicyInputError naming the file."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyInputError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyInputError(f"{path}: not a JSON document: {exc}") from None
    if not isinstance(document, dict):
        raise PolicyInputError(f"{path}: a policy is a JSON object ({{...}})")
    return document


def days_of(text: str, what: str) -> list[str]:
    """Day names from ``mon,wed`` or a range ``mon-fri`` (or both: ``mon-wed,sat``)."""
    found: list[str] = []
    for part in text.lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise PolicyInputError(f"{what}: {part!r} is not a day (mon..sun) nor a range mon-fri")
        start, stop = DAYS.index(first), DAYS.index(last if dash else first)
        found += [DAYS[(start + step) % 7] for step in range((stop - start) % 7 + 1)]
    return list(dict.fromkeys(found))


def window_of(text: str) -> dict[str, Any]:
    """One ``--window`` option, ``HH:MM-HH:MM[@DAYS]``, as the JSON form's window."""
    match = _WINDOW.match(text)
    if match is None:
        raise PolicyInputError(
            f"--window {text!r}: write START-END[@DAYS], e.g. 08:00-23:00@mon-fri"
        )
    window: dict[str, Any] = {"start": match["start"], "end": match["end"]}
    if match["days"]:
        window["days"] = days_of(match["days"], f"--window {text!r}")
    return window


def day_rates_of(options: Iterable[str]) -> dict[str, float]:
    """``--day-rate DAYS=RATE`` options (``sat-sun=2``) as the JSON form's ``day_rates``."""
    rates: dict[str, float] = {}
    for option in options:
        days, equals, rate = option.partition("=")
        try:
            value = float(rate) if equals else None
        except ValueError:
            value = None
        if value is None:
            raise PolicyInputError(f"--day-rate {option!r}: write DAYS=RATE, e.g. sat-sun=2")
        rates |= dict.fromkeys(days_of(days, f"--day-rate {option!r}"), value)
    return rates


@dataclass(frozen=True)
class PolicyOptions:
    """A policy given as command-line options; unset options leave the key out."""

    time_zone: str | None = None
    windows: tuple[str, ...] = ()
    min_hours: float | None = None
    max_hours: float | None = None
    day_rates: tuple[str, ...] = ()
    quiet_dates: tuple[str, ...] = ()

    @property
    def given(self) -> bool:
        return any(value not in (None, ()) for value in vars(self).values())

    def document(self) -> dict[str, Any]:
        """The JSON form; raise PolicyInputError for an option that cannot be read."""
        document: dict[str, Any] = {}
        if self.time_zone is not None:
            document["time_zone"] = self.time_zone
        if self.windows:
            document["windows"] = [window_of(text) for text in self.windows]
        if self.min_hours is not None:
            document["min_interval_hours"] = self.min_hours
        if self.max_hours is not None:
            document["max_interval_hours"] = self.max_hours
        if self.day_rates:
            document["day_rates"] = day_rates_of(self.day_rates)
        if self.quiet_dates:
            document["quiet_dates"] = list(self.quiet_dates)
        return document


def checked(document: dict[str, Any], source: str) -> scheduler_pb2.SchedulePolicy:
    """``document`` read by ``parse_policy`` and sent in its normal form.

    Raises PolicyInputError, naming ``source`` and the bad field.
    """
    try:
        chosen = parse_policy(document)
    except SchedulerError as exc:
        raise PolicyInputError(f"{source}: {exc}") from None
    return policy_message(policy_to_dict(chosen))


def parse_ids(text: str, source: str) -> list[int]:
    """Avatar ids separated by commas, spaces or newlines (``#`` starts a comment).

    Duplicates are folded, order kept. Raises PolicyInputError for anything
    that is not a positive integer, or for no id at all.
    """
    ids: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        for word in re.split(r"[\s,]+", line.split("#", 1)[0].strip()):
            if not word:
                continue
            if not word.isdigit() or int(word) <= 0:
                raise PolicyInputError(f"{source} line {number}: {word!r} is not a positive id")
            ids.append(int(word))
    if not ids:
        raise PolicyInputError(f"{source}: no avatar id in it")
    return list(dict.fromkeys(ids))


def read_ids(path: str) -> list[int]:
    """The avatar ids in the file at ``path`` (see ``parse_ids``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyInputError(f"{path}: cannot read it: {exc}") from None
    return parse_ids(text, path)


# -- calling the API --------------------------------------------------------------------


def get_policy(target: str, avatar_id: int, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Message:
    """``GetAvatarSchedulePolicy`` for one avatar; raise SchedulerError at the gRPC level."""
    request = scheduler_pb2.GetAvatarSchedulePolicyRequest(avatar_id=avatar_id)
    return invoke(target, "GetAvatarSchedulePolicy", request, timeout_s=timeout_s)


def set_policy(
    target: str,
    avatar_id: int,
    policy: scheduler_pb2.SchedulePolicy,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Message:
    """``SetAvatarSchedulePolicy`` for one avatar; raise SchedulerError at the gRPC level."""
    request = scheduler_pb2.SetAvatarSchedulePolicyRequest(avatar_id=avatar_id, policy=policy)
    return invoke(target, "SetAvatarSchedulePolicy", request, timeout_s=timeout_s)


@dataclass
class BulkResult:
    """What ``set_many`` did, summed over its calls."""

    asked: int
    updated: int = 0
    redrawn: int = 0
    calls: int = 0
    missing: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "updated": self.updated,
            "redrawn": self.redrawn,
            "calls": self.calls,
            "missing_avatar_ids": self.missing,
        }


class BulkFailed(SchedulerError):
    """A ``SetSchedulePolicies`` call answered a code other than 0; ``done`` is what the
    calls before it did (each call is its own transaction, so those stay set)."""

    def __init__(self, message: str, done: BulkResult) -> None:
        super().__init__(message)
        self.done = done


def set_many(
    target: str,
    avatar_ids: Sequence[int],
    policy: scheduler_pb2.SchedulePolicy,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int], None] | None = None,
) -> BulkResult:
    """Give ``policy`` to every avatar of ``avatar_ids``: one call per ``MAX_IDS_PER_CALL``.

    Raises BulkFailed for a call answered with a non-zero code (the calls
    before it stay done), SchedulerError when a call fails at the gRPC level.
    """
    result = BulkResult(asked=len(avatar_ids))
    for batch in chunks(avatar_ids, MAX_IDS_PER_CALL):
        request = scheduler_pb2.SetSchedulePoliciesRequest(avatar_ids=batch, policy=policy)
        response = invoke(target, "SetSchedulePolicies", request, timeout_s=timeout_s)
        if response.code != 0:
            sent = f"; the {result.calls} call(s) before it set {result.updated} avatar(s)"
            raise BulkFailed(
                f"code {response.code}: {response.message}" + (sent if result.calls else ""),
                result,
            )
        result.calls += 1
        result.updated += response.updated
        result.redrawn += response.redrawn
        result.missing += list(response.missing_avatar_ids)
        if progress is not None:
            progress(len(batch))
    return result


# -- preview ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """The next times an avatar would be dispatched, each drawn after a success at the one
    before, starting from ``start``; in its policy's zone."""

    avatar_id: int
    summary: str
    zone: ZoneInfo
    start: datetime
    draws: list[datetime]

    def as_dict(self) -> dict[str, Any]:
        return {
            "avatar_id": self.avatar_id,
            "time_zone": self.zone.key,
            "summary": self.summary,
            "from": self.start.astimezone(self.zone).isoformat(),
            "draws": [moment.astimezone(self.zone).isoformat() for moment in self.draws],
        }

    def render(self) -> str:
        lines = [
            f"avatar {self.avatar_id}: {self.summary}",
            f"from {self.start.astimezone(self.zone).strftime(LOCAL_FORMAT)} ({self.zone.key}),"
            " each draw after a success at the one before:",
        ]
        previous = self.start
        for number, moment in enumerate(self.draws, 1):
            gap = int((moment - previous).total_seconds())
            local = moment.astimezone(self.zone).strftime(LOCAL_FORMAT)
            lines.append(
                f"{number:>4}  {local}  +{gap // 3600}h{gap % 3600 // 60:02d}m{gap % 60:02d}s"
            )
            previous = moment
        return "\n".join(lines)


def preview(
    response: Any, avatar_id: int, start: datetime, count: int, rng: random.Random
) -> Preview:
    """The next ``count`` draws for the policy a ``GetAvatarSchedulePolicy`` answer holds.

    Raises SchedulerError when the policy gives no next time.
    """
    chosen: SchedulePolicy = parse_policy(policy_document(response.policy))
    context = PolicyContext(
        ZoneInfo(response.effective_time_zone),
        response.effective_min_interval_hours,
        response.effective_max_interval_hours,
    )
    draws: list[datetime] = []
    moment = start
    for _ in range(count):
        moment = context.next_due(moment, chosen, rng)
        draws.append(moment)
    return Preview(avatar_id, response.summary, context.zone_of(chosen), start, draws)


# -- showing answers --------------------------------------------------------------------


def render(response: Message) -> str:
    """A policy answer as text: its scalar fields, the schedule info if any, then the
    policy as the JSON ``avatar policy set --file`` takes."""
    scalars, info = [], None
    for descriptor in response.DESCRIPTOR.fields:
        value = getattr(response, descriptor.name)
        if descriptor.message_type is None:
            scalars.append((descriptor.name, str(value)))
        elif descriptor.name == "info" and response.HasField("info"):
            info = [(f.name, str(getattr(value, f.name))) for f in value.DESCRIPTOR.fields]
    lines = key_values(scalars)
    if info is not None:
        lines += ["", *key_values(info)]
    if response.HasField("policy"):
        lines += ["", "policy:", json.dumps(policy_document(response.policy), indent=2)]
    return "\n".join(lines)
