"""The failure walk: replay one avatar's dispatches and state changes through the policy.

History rows are in commit order (their ids, serialised by the schedule row's
lock). A state change made through the API (enable, pause, resume) falls
between two of them: the journal's history marks say between which, or give
a small range when a dispatch was recorded during the call. A call that got
no certain answer may or may not have applied. The walk tries every
placement (a few at most) and keeps those that explain the final row:
status, pause reason and ``failed_count``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from me2_devkit.chaos.data import Dispatch, Schedule
from me2_devkit.chaos.journal import ENABLE, PAUSE, RESUME, RpcCall
from me2_scheduler import policy
from me2_scheduler.states import Outcome, PauseReason, Status, Trigger

MAX_COMBINATIONS = 512
CLOCK_SLACK_S = 2.0  # DATETIME seconds are truncated; a commit follows its finished_time


@dataclass
class State:
    """The modelled row while walking."""

    status: str | None = None
    reason: str | None = None
    failed_count: int = 0
    # (start, end or None) epoch seconds while the model is not active
    inactive: list[list[float | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    auto_pauses: int = 0

    def set_status(self, status: str, reason: str | None, at: float) -> None:
        if self.status == Status.ACTIVE and status != Status.ACTIVE:
            self.inactive.append([at, None])
        elif self.status not in (None, Status.ACTIVE) and status == Status.ACTIVE and self.inactive:
            self.inactive[-1][1] = at
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Effect:
    """A state-changing call and where it may fall among the rows (``None``: not applied)."""

    call: RpcCall
    positions: tuple[int | None, ...]


def placements(call: RpcCall, rows: Sequence[Dispatch]) -> Effect:
    """Where ``call`` may have taken effect: after how many of ``rows`` (sorted by id)."""
    if call.hist_before is not None and call.hist_after is not None:
        low = sum(1 for row in rows if row.id <= call.hist_before)
        high = sum(1 for row in rows if row.id <= call.hist_after)
    else:  # MySQL could not tell: order by time, widely
        low = sum(1 for row in rows if row.finished + CLOCK_SLACK_S < call.sent)
        high = sum(1 for row in rows if row.started <= call.returned)
    positions: tuple[int | None, ...] = tuple(range(low, max(low, high) + 1))
    if not call.certain:
        positions += (None,)
    elif not call.ok:
        positions = (None,)
    return Effect(call, positions)


def apply_row(state: State, row: Dispatch, max_failures: int) -> None:
    """A recorded dispatch, as ``MysqlStore.record_*`` applies it."""
    auto_paused = state.status == Status.PAUSED and state.reason == PauseReason.FAILURES
    if auto_paused and row.trigger == Trigger.AUTO:
        state.problems.append(f"auto dispatch (history id {row.id}) after an auto-pause")
    if row.outcome == Outcome.SUCCESS:
        state.failed_count = 0
    elif row.outcome == Outcome.FAILURE:
        outcome = policy.after_failure(state.failed_count, max_failures)
        state.failed_count = outcome.failed_count
        if outcome.pause and state.status == Status.ACTIVE:
            state.auto_pauses += 1
            state.set_status(Status.PAUSED, PauseReason.FAILURES, row.started)


def apply_call(state: State, call: RpcCall) -> None:
    """An applied enable, pause or resume, as ``policy.decide`` says."""
    if call.method == PAUSE and state.status == Status.ACTIVE:
        state.set_status(Status.PAUSED, PauseReason.USER, call.sent)
    elif call.method == ENABLE and state.status is None:
        state.status, state.failed_count = Status.ACTIVE, 0
    elif (call.method == RESUME and state.status == Status.PAUSED) or (
        call.method == ENABLE and state.status in (Status.PAUSED, Status.DISABLED)
    ):
        state.failed_count = 0
        state.set_status(Status.ACTIVE, None, call.returned)


def walk(
    rows: Sequence[Dispatch], order: Sequence[tuple[RpcCall, int | None]], max_failures: int
) -> State:
    """Replay ``rows`` with each call applied after ``position`` rows (None: not applied)."""
    state = State()
    pending = sorted(
        ((pos, call.sent, call) for call, pos in order if pos is not None), key=lambda p: p[:2]
    )
    queue = iter(pending)
    nxt = next(queue, None)
    for i in range(len(rows) + 1):
        while nxt is not None and nxt[0] == i:
            apply_call(state, nxt[2])
            nxt = next(queue, None)
        if i < len(rows):
            apply_row(state, rows[i], max_failures)
    return state


def combinations(effects: Sequence[Effect]) -> Iterator[list[tuple[RpcCall, int | None]]] | None:
    """Every placement of ``effects``, or None when there are too many to try."""
    total = 1
    for effect in effects:
        total *= len(effect.positions)
    if total > MAX_COMBINATIONS:
        return None
    calls = [effect.call for effect in effects]
    return (
        list(zip(calls, choice, strict=True))
        for choice in itertools.product(*(e.positions for e in effects))
    )


@dataclass(frozen=True)
class Verdict:
    """What the walk concludes for one avatar."""

    status_ok: bool  # (c): status and pause reason explained, no auto dispatch after auto-pause
    count_ok: bool  # (e): failed_count explained
    state: State  # the explaining walk (or the first one tried)
    tried: int
    too_ambiguous: bool = False


def explain(
    rows: Sequence[Dispatch], calls: Sequence[RpcCall], final: Schedule, max_failures: int
) -> Verdict:
    """Try every placement of ``calls`` among ``rows``; keep one that explains ``final``."""
    effects = [placements(call, rows) for call in calls]
    options = combinations(effects)
    if options is None:
        order = [(e.call, e.positions[0]) for e in effects]
        return Verdict(True, True, walk(rows, order, max_failures), 0, too_ambiguous=True)
    first: State | None = None
    any_status = any_count = False
    tried = 0
    for order in options:
        tried += 1
        state = walk(rows, order, max_failures)
        status_ok = not state.problems and _status_matches(state, final)
        count_ok = state.failed_count == final.failed_count
        if status_ok and count_ok:
            return Verdict(True, True, state, tried)
        first = first or state
        any_status, any_count = any_status or status_ok, any_count or count_ok
    assert first is not None  # product() of non-empty options yields at least one
    # Explained apart but never together: the status is what is wrong.
    return Verdict(any_status and not any_count, any_count, first, tried)


def _status_matches(state: State, final: Schedule) -> bool:
    if state.status != final.status:
        return False
    return final.status != Status.PAUSED or state.reason == final.pause_reason
