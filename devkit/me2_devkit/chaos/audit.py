"""The audit of a chaos run: DESIGN §2.3's invariants checked against what really happened.

Inputs are plain values (``AuditInput``) loaded after the run, so every check
is a pure function and is tested on hand-made histories. Each check returns
a ``Finding``: a one-line figure and its violations (empty means it holds).

Time bound of (a): an avatar's next dispatch starts at most
``MaxInterval + LeaseSeconds + recovery`` after the previous one finished,
where ``recovery = ScanInterval + SweepGraceSeconds + 4 × PollInterval +
ActionRpc.Timeout + 1 s`` (the sweep finding a lost avatar, a few claims, a
dispatch in progress, and the DATETIME columns' whole seconds). The part of
a gap that overlaps an outage window or a time the avatar may not have been
active (a pause until a resume that surely applied), each extended by
``recovery`` after it ends, does not count against the bound.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from me2_devkit.chaos.data import AuditInput, Bounds, Dispatch, Finding, IndexSnapshot
from me2_devkit.chaos.injector import windows_of
from me2_devkit.chaos.journal import (
    PAUSE,
    REACTIVATIONS,
    STATE_CHANGES,
    TRIGGER,
    RpcCall,
)
from me2_devkit.chaos.plan import CRASHES, FREEZES, OUTAGES
from me2_devkit.chaos.servertime import server_timed
from me2_devkit.chaos.walk import Verdict, explain
from me2_scheduler.states import Outcome, PauseReason, Status, Trigger

SAMPLE = 8  # violations listed per invariant
# A call written just before SIGSTOP reaches Action a little later (through the
# proxy and the server's thread pool); far less than a lease, so no takeover
# can have happened yet.
FREEZE_SLACK_S = 0.5
__all__ = ["SAMPLE", "Audit", "AuditInput", "Bounds", "Finding", "IndexSnapshot", "audit"]


class Audit:
    """Groups the input per avatar once and runs every check."""

    def __init__(self, data: AuditInput) -> None:
        self.data = data
        self.rows: dict[int, list[Dispatch]] = defaultdict(list)
        for row in sorted(data.dispatches, key=lambda r: r.id):
            self.rows[row.avatar_id].append(row)
        self.calls: dict[int, list[RpcCall]] = defaultdict(list)
        for call in sorted(data.journal, key=lambda c: c.sent):
            self.calls[call.avatar_id].append(call)
        self.crashes = windows_of(data.windows, CRASHES)
        self.freezes = windows_of(data.windows, FREEZES)
        self.frozen_repeats = 0  # keys repeated by a takeover of a frozen worker's claim
        self.outages = windows_of(data.windows, OUTAGES)
        self.verdicts: dict[int, Verdict] = {
            avatar_id: explain(
                self.rows[avatar_id],
                [c for c in self.calls[avatar_id] if c.method in STATE_CHANGES],
                final,
                data.bounds.max_failures,
            )
            for avatar_id, final in data.schedules.items()
        }

    def run(self) -> list[Finding]:
        """Every invariant, (a) to (f)."""
        return [
            self.no_avatar_lost(),
            self.no_slot_twice(),
            self.auto_pause_at_limit(),
            self.paused_never_dispatched(),
            self.counters_match_history(),
            self.index_matches_mysql(),
        ]

    # -- (a) ----------------------------------------------------------------

    def no_avatar_lost(self) -> Finding:
        bounds, checked, overlapped, longest = self.data.bounds, 0, 0, 0.0
        violations: list[str] = []
        for avatar_id, final in sorted(self.data.schedules.items()):
            if final.status != Status.ACTIVE:
                continue
            excused = self._excused_spans(avatar_id)
            for start, end in self._gaps(avatar_id):
                checked += 1
                covered = _covered(start, end, excused)
                overlapped += covered > 0
                net = end - start - covered
                longest = max(longest, net)
                if net > bounds.gap_s:
                    violations.append(
                        f"avatar {avatar_id}: no dispatch for {end - start:.0f}s "
                        f"({_clock(start)}..{_clock(end)}), {net:.0f}s of it outside outages"
                    )
        active = sum(1 for s in self.data.schedules.values() if s.status == Status.ACTIVE)
        figure = (
            f"{active} avatars active at the end, {checked} gaps between dispatches; the longest,"
            f" net of outages and pauses, {longest:.1f}s (bound {bounds.gap_s:.1f}s);"
            f" {overlapped} gaps overlapped an outage or a pause"
        )
        return Finding("a", "no avatar lost", figure, violations)

    def _gaps(self, avatar_id: int) -> list[tuple[float, float]]:
        """(end of one activity, start of the next), ending with the end of observation."""
        t_end = self.data.t_end
        marks = [(r.started, r.finished) for r in self.rows[avatar_id] if r.started <= t_end]
        marks += [
            (call.returned, call.returned)
            for call in self.calls[avatar_id]
            if call.method in REACTIVATIONS and call.ok
        ]
        marks.sort()
        gaps, previous = [], None
        for start, end in marks:
            if previous is not None and start > previous:
                gaps.append((previous, start))
            previous = end if previous is None else max(previous, end)
        if previous is not None and previous < t_end:
            gaps.append((previous, t_end))
        return gaps

    def _inactive(self, avatar_id: int) -> list[tuple[float, float]]:
        """When the avatar may not have been active, from every pause (sent, any answer) and
        every auto-pause of the walk to the first reactivation that surely applied.

        A reactivation that got no certain answer may not have applied, so it
        ends nothing here.
        """
        calls = self.calls[avatar_id]
        starts = [c.sent for c in calls if c.method == PAUSE]
        starts += [start for start, _ in self.verdicts[avatar_id].state.inactive]
        spans = []
        for start in starts:
            back = next(
                (
                    c.returned
                    for c in calls
                    if c.method in REACTIVATIONS and c.ok and c.sent > start
                ),
                self.data.t_end,
            )
            spans.append((start, back))
        return spans

    def _excused_spans(self, avatar_id: int) -> list[tuple[float, float]]:
        """Outages and the avatar's inactive spans, each extended by the recovery bound."""
        recovery = self.data.bounds.recovery_s
        spans = [(w.start, w.end) for w in self.outages] + self._inactive(avatar_id)
        return _union([(s, e + recovery) for s, e in spans])

    # -- (b) ----------------------------------------------------------------

    def no_slot_twice(self) -> Finding:
        violations: list[str] = []
        by_key: dict[str, list[Dispatch]] = defaultdict(list)
        for row in self.data.dispatches:
            if row.key:
                by_key[row.key].append(row)
        history_repeats = 0
        for key, rows in by_key.items():
            rows.sort(key=lambda r: r.started)
            for first, second in itertools.pairwise(rows):
                history_repeats += 1
                if not self._crash_between(first.started - 1, second.started + 1):
                    violations.append(f"slot {key} recorded twice with no crash between")
        call_repeats = 0
        for key, calls in self.data.calls_per_key.items():
            if calls > 1:
                call_repeats += calls - 1
                violations += self._check_call_repeat(key, by_key.get(key, []))
        violations += self._rekeyed_slots(by_key)
        figure = (
            f"{len(self.data.calls_per_key)} slots sent to Action, {len(self.data.dispatches)}"
            f" history rows; repeated: {history_repeats} in history, {call_repeats} at Action"
            f" (each across a crash, same key)"
        )
        if self.freezes:
            figure += (
                f"; {self.frozen_repeats} keys repeated across a frozen worker, each first"
                " called before it froze"
            )
        return Finding("b", "no planned slot dispatched twice", figure, violations)

    def _crash_between(self, start: float, end: float) -> bool:
        return any(w.start <= end and w.end >= start for w in self.crashes)

    def _check_call_repeat(self, key: str, rows: Sequence[Dispatch]) -> list[str]:
        planned = _key_time(key)
        if planned is None:
            return [f"Action called with a malformed idempotency key {key!r}"]
        upper = max(r.started for r in rows) + 1 if rows else planned + 3 * self.data.bounds.gap_s
        if self._crash_between(planned - 1, min(upper, self.data.t_end)):
            return []
        if self._called_before_freeze(key):
            self.frozen_repeats += 1
            return []
        calls = self.data.calls_per_key[key]
        note = self._arrivals_note(key)
        return [f"slot {key} reached Action {calls} times, no crash between{note}"]

    def _called_before_freeze(self, key: str) -> bool:
        """A repeat by the worker that took over a frozen worker's claim: two calls, the
        first before the freeze began (in flight, or its record pending, when it froze)."""
        arrivals = sorted(self.data.arrivals.get(key, ()))
        return len(arrivals) == 2 and any(
            arrivals[0] < w.start + FREEZE_SLACK_S and w.start <= arrivals[1] for w in self.freezes
        )

    def _arrivals_note(self, key: str) -> str:
        arrivals = self.data.arrivals.get(key)
        if not arrivals:
            return ""
        return " (at " + ", ".join(_clock(t) for t in sorted(arrivals)) + " by Action's clock)"

    def _rekeyed_slots(self, by_key: dict[str, list[Dispatch]]) -> list[str]:
        """A slot cut by a crash must be redone under its own key, not a new one."""
        violations = []
        for key in self.data.calls_per_key:
            planned = _key_time(key)
            if key in by_key or planned is None:
                continue
            avatar_id = int(key.split(":", 1)[0])
            # The redo of a cut slot comes after it: a row of an earlier slot
            # (one retried a second later, started within the second before)
            # is the slot's past, not its redo.
            later = [
                r
                for r in self.rows[avatar_id]
                if r.started >= planned - 1 and (r.planned is None or r.planned >= planned)
            ]
            if not later or later[0].trigger != Trigger.AUTO or later[0].key == key:
                continue
            if not self._touched(avatar_id, planned - 1, later[0].started + 1):
                violations.append(
                    f"slot {key} was cut and then dispatched as {later[0].key} instead"
                )
        return violations

    def _touched(self, avatar_id: int, start: float, end: float) -> bool:
        """Whether any call may have changed the avatar's slot between ``start`` and ``end``."""
        return any(
            c.sent <= end and c.returned >= start
            for c in self.calls[avatar_id]
            if c.method in STATE_CHANGES or c.method == TRIGGER
        )

    # -- (c) and (e) ------------------------------------------------------------

    def auto_pause_at_limit(self) -> Finding:
        violations, ambiguous = [], 0
        auto_paused = 0
        for avatar_id, verdict in sorted(self.verdicts.items()):
            final = self.data.schedules[avatar_id]
            auto_paused += (
                final.status == Status.PAUSED and final.pause_reason == PauseReason.FAILURES
            )
            ambiguous += verdict.too_ambiguous
            if not verdict.status_ok:
                state = verdict.state
                why = "; ".join(state.problems) or f"walk ends {state.status}/{state.reason}"
                violations.append(
                    f"avatar {avatar_id}: row is {final.status}/{final.pause_reason}, {why}"
                )
        walked = sum(1 for r in self.data.dispatches if r.outcome == Outcome.FAILURE)
        replayed = sum(v.state.auto_pauses for v in self.verdicts.values())
        figure = (
            f"{walked} failures replayed: {replayed} auto-pauses, {auto_paused} still paused by"
            f" failures at the end; each exactly where {self.data.bounds.max_failures}"
            " consecutive failures occurred"
            + (f"; {ambiguous} too ambiguous to walk" if ambiguous else "")
        )
        return Finding("c", "auto-pause exactly at the limit", figure, violations)

    def counters_match_history(self) -> Finding:
        violations = []
        for avatar_id, final in sorted(self.data.schedules.items()):
            successes = sum(1 for r in self.rows[avatar_id] if r.outcome == Outcome.SUCCESS)
            if final.schedule_count != successes:
                violations.append(
                    f"avatar {avatar_id}: schedule_count {final.schedule_count}, "
                    f"history has {successes} successes"
                )
            verdict = self.verdicts[avatar_id]
            if not verdict.count_ok:
                violations.append(
                    f"avatar {avatar_id}: failed_count {final.failed_count}, "
                    f"history implies {verdict.state.failed_count}"
                )
        figure = f"{len(self.data.schedules)} avatars: schedule_count and failed_count checked"
        return Finding("e", "counters equal what history implies", figure, violations)

    # -- (d) ----------------------------------------------------------------

    def paused_never_dispatched(self) -> Finding:
        violations, pauses = [], 0
        for avatar_id, calls in self.calls.items():
            for call in calls:
                if call.method != PAUSE or not call.ok:
                    continue
                pauses += 1
                until = next(
                    (c.sent for c in calls if c is not call and _may_undo(c, call)),
                    self.data.t_end,
                )
                violations += [
                    f"avatar {avatar_id}: auto dispatch at {_clock(row.started)} after "
                    f"its pause returned at {_clock(call.returned)}"
                    for row in self.rows[avatar_id]
                    # started is whole seconds: started + 1 bounds the real start from above
                    if row.trigger == Trigger.AUTO and call.returned < row.started <= until - 1
                ]
        figure = f"{pauses} pauses answered 0; auto dispatches after each checked"
        return Finding("d", "a paused avatar is never dispatched", figure, violations)

    # -- (f) ----------------------------------------------------------------

    def index_matches_mysql(self) -> Finding:
        index, violations = self.data.index, []
        for avatar_id, final in sorted(self.data.schedules.items()):
            in_due, in_flight = avatar_id in index.due, avatar_id in index.inflight
            if final.status != Status.ACTIVE:
                if in_due or in_flight:
                    violations.append(f"avatar {avatar_id} is {final.status} but indexed")
            elif in_due == in_flight:
                where = "both due and inflight" if in_due else "neither due nor inflight"
                violations.append(f"active avatar {avatar_id} is in {where}")
            elif in_due and int(index.due[avatar_id]) != final.next_due:
                violations.append(
                    f"avatar {avatar_id}: due at {int(index.due[avatar_id])}, "
                    f"MySQL says {final.next_due}"
                )
        strays = (set(index.due) | index.inflight) - set(self.data.schedules)
        violations += [f"avatar {a} indexed without a schedule" for a in sorted(strays)]
        active = sum(1 for s in self.data.schedules.values() if s.status == Status.ACTIVE)
        figure = f"{active} active avatars: {len(index.due)} due, {len(index.inflight)} in flight"
        return Finding("f", "Redis index equals MySQL", figure, violations)


def _union(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping spans merged, in order."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _covered(start: float, end: float, spans: Sequence[tuple[float, float]]) -> float:
    """How much of ``start..end`` the (merged) ``spans`` cover."""
    return sum(max(0.0, min(end, e) - max(start, s)) for s, e in spans)


def _may_undo(other: RpcCall, pause: RpcCall) -> bool:
    """Whether ``other`` may have made the paused avatar dispatchable again after ``pause``."""
    reactivates = other.method in REACTIVATIONS or other.method == TRIGGER
    return reactivates and other.returned > pause.sent


def _key_time(key: str) -> float | None:
    """The planned epoch seconds of ``"<avatar_id>:<planned ms>"``, None if malformed."""
    try:
        avatar_id, millis = key.split(":", 1)
        int(avatar_id)
        return int(millis) / 1000
    except ValueError:
        return None


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch_s))


def audit(data: AuditInput) -> list[Finding]:
    """Run every check on ``data``, its history rows on MySQL's clock (``server_timed``)."""
    return Audit(server_timed(data)).run()


def counts_by_outcome(dispatches: Iterable[Dispatch]) -> Counter[str]:
    """History rows by outcome (for the report)."""
    return Counter(row.outcome for row in dispatches)
