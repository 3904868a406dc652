"""(i): after each fault the service serves and dispatches again in time; during it, RPCs answer.

For each fault (back-to-back ones merged), from the moment it ended: the first
RPC of the run's journal answered with a code that says what it did (0, 400,
404, 409; a 503 is no recovery), and the first successful auto dispatch
recorded (MySQL's own insert time). The later of the two must come within
``Bounds.recovery_after_s``: ScanInterval + LeaseSeconds + 4 × PollInterval +
ActionRpc.Timeout + 1 s. A fault whose recovery the next fault cut short
(it started within the bound, before the service was back) is measured after
the later one.

Every RPC must also get an answer within the journal's deadline, whatever is
down, except while the rpc_server itself was killed and restarting: a code
(503 included), or the server's own ``DEADLINE_EXCEEDED`` at its Timeout,
but the latter only while a server was slowed (latency, jitter). While one
is unreachable the service must say so (503), not let the call time out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from me2_devkit.chaos.data import AuditInput, Finding
from me2_devkit.chaos.injector import FaultWindow
from me2_devkit.chaos.journal import CALL_TIMEOUT_S, DECIDED, UNANSWERED, RpcCall
from me2_devkit.chaos.plan import RPC_BURST, RPC_SERVER_KILL
from me2_scheduler.states import Outcome, Trigger

TOUCHING_S = 0.5  # windows this close are one fault (phases back to back)
SLOWED = ("_latency", "_jitter")  # proxy phases that slow a server without cutting it off
RPC_RESTART_S = 10.0  # a killed rpc_server is back within this (restart backoff + boot)


def _spans(windows: Sequence[FaultWindow]) -> list[tuple[float, float, str]]:
    """Fault spans in time order, overlapping (or touching) windows merged."""
    spans: list[tuple[float, float, str]] = []
    for w in sorted(windows, key=lambda w: w.start):
        if w.kind == RPC_BURST:
            continue
        if spans and w.start <= spans[-1][1] + TOUCHING_S:
            start, end, kinds = spans[-1]
            spans[-1] = (start, max(end, w.end), f"{kinds}+{w.kind}")
        else:
            spans.append((w.start, w.end, w.kind))
    return spans


def _first_answer(calls: Sequence[RpcCall], after: float) -> float | None:
    return min((c.returned for c in calls if c.sent >= after and c.code in DECIDED), default=None)


def _first_dispatch(data: AuditInput, after: float) -> float | None:
    times = [
        r.recorded
        for r in data.dispatches
        if r.outcome == Outcome.SUCCESS and r.trigger == Trigger.AUTO
    ]
    return min((t for t in times if t is not None and t >= after), default=None)


def recovery_finding(data: AuditInput) -> Finding:
    """(i), from the journal, the history's server times and the fault windows."""
    bound = data.bounds.recovery_after_s
    violations: list[str] = []
    measured: list[float] = []
    spans = _spans(data.windows)
    carried: tuple[float, str] | None = None  # a fault whose recovery the next one cut
    for i, (start, end, kinds) in enumerate(spans):
        if carried is not None:
            start, kinds = carried[0], f"{carried[1]}+{kinds}"
        next_start = spans[i + 1][0] if i + 1 < len(spans) else data.t_end
        rpc, dispatch = _first_answer(data.journal, end), _first_dispatch(data, end)
        back = None if rpc is None or dispatch is None else max(rpc, dispatch)
        if (back is None or back > next_start) and next_start < end + bound:
            carried = (start, kinds)  # cut short by the next fault: measured after it
            continue
        carried = None
        where = f"after {kinds} ({_clock(start)}..{_clock(end)})"
        if end + bound > data.t_end and (back is None or back > data.t_end):
            violations.append(f"{where}: ended too late to see the service recover")
        elif back is None:
            what = "no RPC answered" if rpc is None else "no dispatch recorded"
            violations.append(f"{where}: {what} by the end")
        else:
            measured.append(back - end)
            if back - end > bound:
                violations.append(
                    f"{where}: serving again after {rpc - end:.1f}s, dispatching after"  # type: ignore[operator]
                    f" {dispatch - end:.1f}s (bound {bound:.1f}s)"  # type: ignore[operator]
                )
    unanswered, slowest, timed_out = _unanswered(data)
    violations += unanswered
    figure = (
        f"{len(measured)} fault ends measured: serving and dispatching again within"
        f" {max(measured, default=0.0):.1f}s (bound {bound:.1f}s); {len(data.journal)} RPCs,"
        f" {len(unanswered)} without a proper answer within {CALL_TIMEOUT_S:g}s,"
        f" {timed_out} timed out by the server while a server was slowed; slowest answer"
        f" {slowest:.1f}s"
    )
    title = "the service recovers after each fault; RPCs answer during it"
    return Finding("i", title, figure, violations)


def _unanswered(data: AuditInput) -> tuple[list[str], float, int]:
    """RPCs without a proper answer, outside rpc_server kills; the slowest answer; and how
    many the server timed out itself while a server was slowed."""
    kills = [(w.start, w.end + RPC_RESTART_S) for w in data.windows if w.kind == RPC_SERVER_KILL]
    found, slowest, timed_out = [], 0.0, 0
    for call in data.journal:
        took = call.returned - call.sent
        if call.code != UNANSWERED:
            slowest = max(slowest, took)
            continue
        if any(s <= call.returned and call.sent <= e for s, e in kills):
            continue
        near = [w for w in data.windows if w.start - 1 <= call.returned and call.sent <= w.end + 1]
        during = [w.kind for w in near if w.kind != RPC_BURST]
        by_server = call.error == "DEADLINE_EXCEEDED" and took < CALL_TIMEOUT_S - 0.5
        if by_server and during and all(k.endswith(SLOWED) for k in during):
            timed_out += 1
            continue
        what = (
            f"answered DEADLINE_EXCEEDED after {took:.1f}s, not 503,"
            if by_server
            else f"got no answer ({call.error})"
        )
        found.append(
            f"{call.method}({call.avatar_id}) sent at {_clock(call.sent)} {what}"
            f" during {'+'.join(during) or 'no fault'}"
        )
    return found, slowest, timed_out


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch_s))
