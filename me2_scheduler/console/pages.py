"""The console's pages (template name and context per GET) and its two kinds of POST.

Each GET handler reads through ``queries.Reads``, the store and the diary
runs, all bounded reads (see ``queries``); each POST handler returns where
to go next and the outcome to show there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from me2_scheduler.clock import utc_now
from me2_scheduler.config import Config
from me2_scheduler.console.actions import METHODS, Actions
from me2_scheduler.console.auth import Operator
from me2_scheduler.console.jobs import KINDS, IndexJobs
from me2_scheduler.console.queries import REASONS, Reads
from me2_scheduler.console.web import Request, Response, safe_back
from me2_scheduler.ops.status import service_health
from me2_scheduler.schedule_policy import summary
from me2_scheduler.schedule_policy_model import DEFAULT
from me2_scheduler.states import PauseReason, Status
from me2_scheduler.storage.diary_runs import DiaryRunStore
from me2_scheduler.storage.mysql import MysqlStore

HISTORY_PAGE = 20
DIARY_RUNS = 5
HEALTH_TIMEOUT_S = 1.0
MAX_HOURS = 24
MAX_FILTER_CHARS = 100
MAX_ID = 2**63 - 1
BUTTONS = {
    Status.ACTIVE: ("pause", "trigger", "disable"),
    Status.PAUSED: ("resume", "trigger", "disable"),
    Status.DISABLED: ("enable",),
    None: ("enable",),
}
LABELS = {
    action: method.removesuffix("AvatarSchedule").removesuffix("Schedule")
    for action, method in METHODS.items()
}

Context = tuple[str, dict[str, Any]]
Posted = tuple[str, bool, str]  # where to go, whether it worked, what to say


class BadInput(ValueError):
    """A query or form value the page cannot take; answered 400 with the message."""


@dataclass
class Services:
    """What the pages read and act through (one of each per console process)."""

    config: Config
    reads: Reads
    store: MysqlStore
    diary_runs: DiaryRunStore
    actions: Actions
    jobs: IndexJobs


def whole_number(raw: str, name: str, *, low: int = 0, high: int = MAX_ID) -> int:
    """``raw`` as an int in [low, high]; raise ``BadInput`` naming ``name`` otherwise."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise BadInput(f"{name} must be a whole number from {low} to {high}")
    return int(text)


# -- GET --------------------------------------------------------------------------------


def overview(services: Services, request: Request, found: re.Match[str]) -> Context:
    """Statuses, queues, recent dispatches, diary runs and the service's health."""
    reads = services.reads
    return "overview.html", {
        "counts": reads.status_counts(),
        "queues": reads.queues(),
        "recent": reads.recent(utc_now()),
        "runs": services.diary_runs.latest(DIARY_RUNS),
        "health": service_health(services.config.prometheus, HEALTH_TIMEOUT_S),
    }


def timeline(services: Services, request: Request, found: re.Match[str]) -> Context:
    """Avatars due per minute over the next ``hours`` (1-24, default 6)."""
    hours = whole_number(request.query.get("hours", "6"), "hours", low=1, high=MAX_HOURS)
    line = services.reads.timeline(hours)
    peak = max([*line.per_minute, 1])
    minutes = [(line.start + i * 60, n) for i, n in enumerate(line.per_minute)]
    return "timeline.html", {"line": line, "hours": hours, "peak": peak, "minutes": minutes}


def paused(services: Services, request: Request, found: re.Match[str]) -> Context:
    """Paused avatars, by reason (default: paused by failures) and a piece of their error."""
    reason = request.query.get("reason", PauseReason.FAILURES)
    if reason not in REASONS:
        raise BadInput(f"reason must be one of {', '.join(REASONS)}")
    text = request.query.get("q", "").strip()
    if len(text) > MAX_FILTER_CHARS:
        raise BadInput(f"the error filter takes at most {MAX_FILTER_CHARS} characters")
    after = whole_number(request.query.get("after", "0"), "after")
    page = services.reads.paused_page(reason, text, after)
    return "paused.html", {"page": page, "reason": reason, "q": text, "reasons": REASONS}


def find_avatar(services: Services, request: Request, found: re.Match[str]) -> Response:
    """The avatar search box: an id goes to its page."""
    avatar_id = whole_number(request.query.get("id", ""), "the avatar id", low=1)
    return Response.redirect(f"/console/avatars/{avatar_id}")


def avatar(services: Services, request: Request, found: re.Match[str]) -> Context:
    """One avatar: schedule, policy, place in the index, a page of history, its buttons."""
    avatar_id = whole_number(found["avatar_id"], "the avatar id", low=1)
    cursor = whole_number(request.query.get("cursor", "0"), "cursor")
    store = services.store
    row = store.get(avatar_id)
    chosen = store.get_policy(avatar_id) if row is not None else DEFAULT
    entries = store.history(avatar_id, HISTORY_PAGE, before_id=cursor) if row else []
    due, lease = services.reads.place(avatar_id)
    return "avatar.html", {
        "avatar_id": avatar_id,
        "row": row,
        "policy": None if chosen == DEFAULT else summary(chosen),
        "due": due,
        "lease": lease,
        "entries": entries,
        "cursor": cursor,
        "next_cursor": entries[-1].id if len(entries) == HISTORY_PAGE else None,
        "buttons": [(a, LABELS[a]) for a in BUTTONS[row.status if row else None]],
    }


def index_health(services: Services, request: Request, found: re.Match[str]) -> Context:
    """The index's meta and sizes, and the last verify or rebuild with its progress."""
    return "index.html", {
        "meta": services.reads.index_meta(),
        "queues": services.reads.queues(),
        "job": services.jobs.last,
        "kinds": KINDS,
    }


# -- POST -------------------------------------------------------------------------------


def avatar_action(
    services: Services, request: Request, found: re.Match[str], operator: Operator
) -> Posted:
    """Pause, resume, trigger, disable or enable one avatar through the API's handlers."""
    avatar_id = whole_number(found["avatar_id"], "the avatar id", low=1)
    action = found["action"]
    if action not in METHODS:
        raise BadInput(f"unknown action {action!r}; one of {', '.join(METHODS)}")
    back = safe_back(request.form.get("back", ""), f"/console/avatars/{avatar_id}")
    done = services.actions.run(action, avatar_id, operator.name)
    what = f"{LABELS[action]} avatar {avatar_id}"
    if not done.ok:
        return back, False, f"{what} refused: {done.code} {done.message}"
    extra = f" (action {done.action_type} #{done.action_id})" if action == "trigger" else ""
    return back, True, f"{what}: {done.message}{extra}"


def index_job(
    services: Services, request: Request, found: re.Match[str], operator: Operator
) -> Posted:
    """Start verify, verify-and-repair or rebuild of the index in the background."""
    kind = found["kind"]
    if kind not in KINDS:
        raise BadInput(f"unknown index job {kind!r}; one of {', '.join(KINDS)}")
    job = services.jobs.start(kind, operator.name)
    if job is None:
        return "/console/index", False, "another index job is running; wait for it to finish"
    return "/console/index", True, f"{job.command} started"
