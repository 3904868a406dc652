"""Server-side time for the audit, so a host with a skewed clock cannot fool it.

A history row's ``started_time``/``finished_time`` are stamped by whoever
recorded it; under a clock-skew fault that host is 45 s off. The audit
therefore reads two clocks no fault skews:

- MySQL's: a trigger (installed by the run, not the service) notes
  ``UTC_TIMESTAMP(6)`` when each history row is inserted, in a table of its
  own, so the service's tables stay exactly as the service made them;
- Action's: the run's Action simulator notes when each key's calls arrived.

``server_timed`` puts each row on the server clock before the invariants
are checked: a row whose stamp is off its insert time by more than
``STAMP_TOLERANCE_S`` is shifted by that offset. A row stamped late only
because its INSERT waited (MariaDB slowed or silent) keeps its stamp: an
insert is never earlier than its stamp, so only a late insert outside those
faults, or any early one, is a skewed clock. (h) then reports what the
service itself must get right: rows stamped by a skewed clock, slots that
reached Action before their planned time, and next times that are not
``MinInterval..MaxInterval`` (or the retry delay) after the server time of
the record that set them.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from me2_devkit.chaos.data import AuditInput, Dispatch, Finding
from me2_devkit.chaos.injector import FaultWindow
from me2_devkit.chaos.journal import STATE_CHANGES, TRIGGER, RpcCall
from me2_devkit.chaos.netfaults import SKEW
from me2_devkit.chaos.plan import MARIADB_KILL9, MARIADB_STOP
from me2_devkit.testing.servers import root_query
from me2_scheduler.states import Outcome, Trigger

HISTORY_CLOCK = "chaos_history_clock"
STAMP_TOLERANCE_S = 3.0  # whole-second stamps, a commit in progress
EARLY_TOLERANCE_S = 0.5  # a key's planned ms comes from Redis TIME, its arrival from Action's
NEXT_SLACK_S = 2.0  # whole seconds of planned_time, the record's own duration
SKEW_LAG_SLACK_S = 1.0  # a skewed host may cost lag no more than this at p99
SAMPLE = 8

_CLOCK_SQL = (
    f"CREATE TABLE IF NOT EXISTS {HISTORY_CLOCK} ("
    " history_id BIGINT NOT NULL PRIMARY KEY, recorded_at DATETIME(6) NOT NULL"
    ") ENGINE=InnoDB",
    f"DROP TRIGGER IF EXISTS {HISTORY_CLOCK}_ai",
    f"CREATE TRIGGER {HISTORY_CLOCK}_ai AFTER INSERT ON avatar_schedule_history"
    f" FOR EACH ROW INSERT INTO {HISTORY_CLOCK} (history_id, recorded_at)"
    " VALUES (NEW.id, UTC_TIMESTAMP(6))",
)


def install_history_clock(port: int, database: str) -> None:
    """Note MySQL's time of every history insert from now on. Raises pymysql.MySQLError."""
    for statement in _CLOCK_SQL:
        root_query(port, database, statement)


def mysql_offset(port: int, database: str) -> float:
    """MySQL's clock minus this host's, in seconds (the middle of the round trip)."""
    before = time.time()
    ((now,),) = root_query(port, database, "SELECT UNIX_TIMESTAMP(UTC_TIMESTAMP(6))")
    return float(now) - (before + time.time()) / 2


def shift_calls(calls: Iterable[RpcCall], offset_s: float) -> list[RpcCall]:
    """The journal on the server's clock."""
    return [replace(c, sent=c.sent + offset_s, returned=c.returned + offset_s) for c in calls]


def shift_windows(windows: Iterable[FaultWindow], offset_s: float) -> list[FaultWindow]:
    """The fault windows on the server's clock."""
    return [replace(w, start=w.start + offset_s, end=w.end + offset_s) for w in windows]


def _mysql_slowed(windows: Sequence[FaultWindow], recovery_s: float) -> list[tuple[float, float]]:
    """When an INSERT may have waited: MariaDB's faults, each plus the recovery bound."""
    kinds = {MARIADB_STOP, MARIADB_KILL9}
    return [
        (w.start, w.end + recovery_s)
        for w in windows
        if w.kind in kinds or w.kind.startswith("mariadb_")
    ]


def stamp_offset(row: Dispatch, slowed: Sequence[tuple[float, float]]) -> float:
    """How far the recording host's clock was off MySQL's for ``row`` (0: within tolerance)."""
    if row.recorded is None:
        return 0.0
    offset = row.recorded - row.finished
    if abs(offset) <= STAMP_TOLERANCE_S:
        return 0.0
    if offset > 0 and any(s <= row.recorded <= e for s, e in slowed):
        return 0.0  # a late insert, not a skewed clock
    return offset


def server_timed(data: AuditInput) -> AuditInput:
    """``data`` with each skew-stamped row moved onto MySQL's clock."""
    slowed = _mysql_slowed(data.windows, data.bounds.recovery_after_s)
    rows = []
    for row in data.dispatches:
        offset = stamp_offset(row, slowed)
        rows.append(
            replace(row, started=row.started + offset, finished=row.finished + offset)
            if offset
            else row
        )
    return replace(data, dispatches=rows)


def key_time(key: str | None) -> float | None:
    """The planned epoch seconds in ``"<avatar_id>:<planned ms>"``; None if malformed."""
    try:
        return int((key or "").split(":", 1)[1]) / 1000
    except (IndexError, ValueError):
        return None


def server_clock_finding(data: AuditInput) -> Finding:
    """(h): rows stamped by a skewed clock, slots dispatched early, next times off the server's."""
    slowed = _mysql_slowed(data.windows, data.bounds.recovery_after_s)
    offsets = [(row, stamp_offset(row, slowed)) for row in data.dispatches]
    skewed = [(row, off) for row, off in offsets if off]
    violations = [
        f"history row {row.id} (avatar {row.avatar_id}) stamped {-off:+.0f}s off MySQL's clock"
        for row, off in skewed
    ]
    early = _early_at_action(data)
    violations += early
    off_next, checked = _next_times_off(data, slowed)
    violations += off_next
    planned_lags = _lags(data)
    lags = [lag for _, lag in planned_lags]
    skew_figure, skew_violations = _lag_with_a_skewed_host(data, planned_lags)
    violations += skew_violations
    figure = (
        f"{len(data.dispatches)} rows: {len(skewed)} stamped by a clock off MySQL's by more"
        f" than {STAMP_TOLERANCE_S:g}s; {len(early)} slots reached Action before their"
        f" planned time; {checked} next times checked against the server time of their"
        f" record, {len(off_next)} outside their interval; lag at Action (server clock)"
        f" {_quantiles(lags)}{skew_figure}"
    )
    return Finding("h", "times come from the server clock", figure, violations)


def _early_at_action(data: AuditInput) -> list[str]:
    found = []
    for key, arrivals in data.arrivals.items():
        planned = key_time(key)
        if planned is not None and arrivals and min(arrivals) < planned - EARLY_TOLERANCE_S:
            found.append(
                f"slot {key} reached Action {planned - min(arrivals):.1f}s before its planned time"
            )
    return found


def _next_times_off(
    data: AuditInput, slowed: Sequence[tuple[float, float]]
) -> tuple[list[str], int]:
    """Next slots set by a record: ``MinInterval..MaxInterval`` (success) or the retry
    delay (failure) after the record's server time, when nothing else touched the avatar."""
    bounds = data.bounds
    touched: dict[int, list[RpcCall]] = defaultdict(list)
    for call in data.journal:
        if call.method in STATE_CHANGES or call.method == TRIGGER:
            touched[call.avatar_id].append(call)
    rows: dict[int, list[Dispatch]] = defaultdict(list)
    for row in sorted(data.dispatches, key=lambda r: r.id):
        rows[row.avatar_id].append(row)
    found, checked = [], 0
    for avatar_id, history in rows.items():
        for this, following in itertools.pairwise(history):
            planned = key_time(following.key)
            recorded = this.recorded
            if following.trigger != Trigger.AUTO or planned is None or recorded is None:
                continue
            if any(s <= recorded <= e for s, e in slowed) or this.outcome == Outcome.SKIPPED:
                continue
            until = following.recorded or following.finished
            if following.key == this.key or _touched(touched[avatar_id], recorded, until):
                continue
            low, high = (
                (bounds.min_interval_s, bounds.max_interval_s)
                if this.outcome == Outcome.SUCCESS
                else (bounds.retry_s, bounds.retry_s)
            )
            checked += 1
            after = planned - recorded
            if not low - NEXT_SLACK_S <= after <= high + NEXT_SLACK_S:
                found.append(
                    f"avatar {avatar_id}: slot {following.key} planned {after:+.0f}s after the"
                    f" {this.outcome} recorded at {_clock(recorded)} (row {this.id}); allowed"
                    f" {low:g}..{high:g}s"
                )
    return found, checked


def _touched(calls: Sequence[RpcCall], recorded: float, until: float) -> bool:
    """Whether a call may have changed the avatar's next slot after the record at
    ``recorded`` and before the next one at ``until``."""
    return any(c.sent <= until and c.returned >= recorded - 1 for c in calls)


def _lags(data: AuditInput) -> list[tuple[float, float]]:
    """Each auto slot's planned time and the seconds from it to its first arrival at Action."""
    lags = []
    for row in data.dispatches:
        planned = key_time(row.key)
        arrivals = data.arrivals.get(row.key or "")
        if row.trigger == Trigger.AUTO and planned is not None and arrivals:
            lags.append((planned, min(arrivals) - planned))
    return lags


def _lag_with_a_skewed_host(
    data: AuditInput, lags: Sequence[tuple[float, float]]
) -> tuple[str, list[str]]:
    """Lag at Action of the slots planned while a host 45 s off was joined, beside that of
    the slots that waited while no fault was on (nor recovering): the p99 may grow by at
    most ``SKEW_LAG_SLACK_S``. A slot counts on either side only if its wait, from planned
    time to first arrival, overlapped no other fault. A host that drew next times by its
    own clock would plan them 45 s late or in the past, and either shows here."""
    skewed = [(w.start, w.end) for w in data.windows if w.kind in SKEW]
    if not skewed:
        return "", []
    recovery = data.bounds.recovery_after_s
    others = [(w.start, w.end + recovery) for w in data.windows if w.kind not in SKEW]
    during, quiet = [], []
    for planned, lag in lags:
        if any(s <= planned + lag and planned <= e for s, e in others):
            continue
        if any(s <= planned <= e for s, e in skewed):
            during.append(lag)
        elif not any(s <= planned + lag and planned <= e + recovery for s, e in skewed):
            quiet.append(lag)
    figure = (
        f"; with a host 45 s off joined {_quantiles(during)}, with no fault on {_quantiles(quiet)}"
    )
    if len(during) < 2 or len(quiet) < 2:
        return figure, []
    grown = _p99(during) - _p99(quiet)
    if grown <= SKEW_LAG_SLACK_S:
        return figure, []
    return figure, [
        f"lag p99 grew {grown:.2f}s while a host 45 s off was joined"
        f" (allowed {SKEW_LAG_SLACK_S:g}s)"
    ]


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def _quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "not measured"
    cuts = statistics.quantiles(values, n=100)
    spread = f"p50 {cuts[49]:.2f}s, p99 {cuts[98]:.2f}s, max {max(values):.2f}s"
    return f"{spread} of {len(values)} slots"


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch_s))
