"""The chaos suite's network scenario: its plan, its server-clock audit, and short real runs.

The checks the scenario adds are pure functions, so each is first shown to
catch what it exists for on hand-made histories (a row stamped by a skewed
clock, a next time set in the past, a slot at Action before its time, a
woken worker calling Action for a claim it lost, no recovery after a fault,
an RPC left unanswered). Then three short runs of the real process tree,
through the fault proxies, show the service keeping every invariant:

- MariaDB blackholed for 20 s: the service serves and dispatches again
  within the recovery bound;
- a worker frozen (SIGSTOP) for three leases, then second supervisors under
  libfaketime 45 s behind and 45 s ahead: no key reaches Action twice, but
  for a call the worker made just before it froze, redone by the worker that
  took its claim over (fencing cannot undo a call already made);
- etcd blackholed, Action's connections silent (half-open), a Redis without
  persistence and mariadbd killed -9: every RPC answered, dispatching recovers.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from me2_devkit import chaos_cli
from me2_devkit.chaos import plan as kinds
from me2_devkit.chaos.audit import (
    FREEZE_SLACK_S,
    AuditInput,
    Finding,
    IndexSnapshot,
    audit,
)
from me2_devkit.chaos.data import Dispatch, Schedule
from me2_devkit.chaos.injector import FaultWindow
from me2_devkit.chaos.journal import ENABLE, PAUSE, UNANSWERED, RpcCall
from me2_devkit.chaos.netfaults import LIBFAKETIME, faketime_env
from me2_devkit.chaos.netplan import make_network_plan
from me2_devkit.chaos.options import network_options
from me2_devkit.chaos.plan import OUTAGES, Fault, FaultPlan
from me2_devkit.chaos.recovery import recovery_finding
from me2_devkit.chaos.report import render_markdown, render_report, render_text
from me2_devkit.chaos.runner import ChaosResult, run_chaos
from me2_devkit.chaos.servertime import server_clock_finding

from .fixtures_chaos import NETWORK_BOUNDS, T0

SHORT_LEASE_S = 3  # the short runs: a freeze of three leases is 9 s

# -- the plan ---------------------------------------------------------------------------


def test_the_network_plan_holds_every_network_fault_without_overlapping_blocks() -> None:
    plan = network_options(seed=1).plan()
    assert plan.duration_s == 330
    assert plan == network_options(seed=1).plan()
    assert plan != network_options(seed=2).plan()
    assert set(plan.counts()) >= set(kinds.NETWORK_KINDS)
    lengths = {f.kind: f.duration_s for f in plan.faults}
    assert lengths[kinds.proxy_kind("mariadb", "blackhole")] == 20
    assert lengths[kinds.WORKER_SIGSTOP] == lengths[kinds.POLLER_SIGSTOP] == 15
    outages = sorted((f for f in plan.faults if f.kind in OUTAGES), key=lambda f: f.at_s)
    for first, second in itertools.pairwise(outages):
        back_to_back = second.at_s == pytest.approx(first.end_s, abs=0.2)
        assert back_to_back or second.at_s >= first.end_s + 12.8 - 0.2, (first, second)


def test_a_run_too_short_for_the_network_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="too short for the network scenario"):
        make_network_plan(1, 120, lease_s=5, gap_s=12.8)


def test_the_command_refuses_a_network_run_too_short_before_starting_anything() -> None:
    group = click.Group()
    chaos_cli.register(group)
    result = CliRunner().invoke(group, ["chaos", "--scenario", "all", "--duration", "100"])
    assert result.exit_code == 1
    assert "error: a 100 s run is too short for the network scenario" in result.output


# -- the server-clock audit on hand-made histories -------------------------------------

_ids = itertools.count(1)


def row(avatar: int, started: float, *, recorded: float | None = None, **kw: object) -> Dispatch:
    """A success stamped ``started`` (its host's clock), inserted at ``recorded`` (MySQL's)."""
    planned = kw.pop("planned", started)
    fields = {"trigger": "auto", "outcome": "success", "key": f"{avatar}:{int(planned) * 1000}"}
    fields.update(kw)
    return Dispatch(
        next(_ids),
        avatar,
        planned=planned,
        started=started,
        finished=started,
        recorded=started if recorded is None else recorded,
        **fields,  # type: ignore[arg-type]
    )


def data_of(
    rows: list[Dispatch],
    calls: list[RpcCall] = (),
    *,
    windows: list[FaultWindow] = (),
    arrivals: dict[str, list[float]] | None = None,
    t_end: float | None = None,
) -> AuditInput:
    avatars = sorted({r.avatar_id for r in rows})
    successes = {a: sum(r.avatar_id == a for r in rows) for a in avatars}
    return AuditInput(
        dispatches=rows,
        schedules={a: Schedule(a, "active", None, successes[a], 0, 1) for a in avatars},
        calls_per_key={k: len(v) for k, v in (arrivals or {}).items()}
        or {r.key: 1 for r in rows if r.key},
        journal=[RpcCall(ENABLE, a, T0 - 10, T0 - 9.99, 0) for a in avatars] + list(calls),
        windows=list(windows),
        index=IndexSnapshot(due=dict.fromkeys(avatars, 1.0), inflight=frozenset()),
        bounds=NETWORK_BOUNDS,
        t_end=t_end if t_end is not None else max(r.finished for r in rows) + 1,
        arrivals=arrivals or {},
    )


def steady(avatar: int, n: int, start: float = T0, every: float = 4.0) -> list[Dispatch]:
    return [row(avatar, start + i * every) for i in range(n)]


def findings_of(data: AuditInput) -> dict[str, Finding]:
    return {f.key: f for f in [*audit(data), server_clock_finding(data), recovery_finding(data)]}


def test_a_clean_history_on_the_server_clock_passes_h_and_i() -> None:
    found = findings_of(data_of(steady(1, 10)))
    assert found["h"].ok and found["i"].ok, (found["h"].violations, found["i"].violations)


def test_a_row_stamped_by_a_clock_45s_behind_is_reported_and_not_taken_for_a_late_dispatch() -> (
    None
):
    rows = steady(1, 3)
    pause = RpcCall(PAUSE, 1, T0 + 10, T0 + 10.1, 0, hist_before=rows[-1].id)
    # Really dispatched at T0 + 9 (before the pause), by a host 45 s behind.
    skewed = row(1, T0 + 9 - 45, recorded=T0 + 9, planned=T0 + 9)
    found = findings_of(data_of([*rows, skewed], [replace(pause, hist_after=skewed.id)]))
    assert any("stamped -45s off" in v for v in found["h"].violations), found["h"].violations
    assert found["d"].ok  # on MySQL's clock the dispatch came before the pause


def test_a_next_time_set_in_the_past_by_a_skewed_host_is_a_violation() -> None:
    first = row(1, T0, planned=T0)
    # The success recorded at T0 planned its next slot 41 s in the past.
    following = row(1, T0 + 0.5, planned=T0 - 41)
    found = server_clock_finding(data_of([first, following]))
    assert any("planned -41s after the success" in v for v in found.violations), found.violations


def test_a_slot_that_reached_action_before_its_planned_time_is_a_violation() -> None:
    rows = steady(1, 2)
    arrivals = {rows[0].key: [T0], rows[1].key: [T0 + 4 - 3]}  # 3 s early
    found = server_clock_finding(data_of(rows, arrivals=arrivals))
    assert any("before its planned time" in v for v in found.violations), found.violations


def lagging(rows: list[Dispatch], lag_s: float) -> dict[str, list[float]]:
    """Each row's slot reached Action ``lag_s`` after its planned time."""
    return {r.key: [r.planned + lag_s] for r in rows if r.key}


@pytest.mark.parametrize(("lag_while_skewed", "violated"), [(0.3, False), (2.5, True)])
def test_lag_grown_by_more_than_a_second_while_a_skewed_host_was_joined_is_a_violation(
    lag_while_skewed: float, violated: bool
) -> None:
    quiet, skewed = steady(1, 30), steady(2, 6, start=T0 + 200)
    joined = FaultWindow(kinds.SKEWED_BEHIND, T0 + 199, T0 + 224)
    arrivals = lagging(quiet, 0.3) | lagging(skewed, lag_while_skewed)

    found = server_clock_finding(data_of([*quiet, *skewed], windows=[joined], arrivals=arrivals))

    assert ("with a host 45 s off joined" in found.figure) and ("of 6 slots" in found.figure)
    grown = [v for v in found.violations if "lag p99 grew" in v]
    assert bool(grown) is violated, (found.figure, found.violations)


def test_a_slot_that_waited_through_another_fault_is_not_counted_against_the_skewed_host() -> None:
    quiet, skewed = steady(1, 30), steady(2, 6, start=T0 + 200)
    joined = FaultWindow(kinds.SKEWED_BEHIND, T0 + 199, T0 + 224)
    mariadb = FaultWindow(kinds.MARIADB_STOP, T0 + 199, T0 + 224)
    arrivals = lagging(quiet, 0.3) | lagging(skewed, 2.5)

    found = server_clock_finding(
        data_of([*quiet, *skewed], windows=[joined, mariadb], arrivals=arrivals)
    )

    assert "with a host 45 s off joined not measured" in found.figure, found.figure
    assert not [v for v in found.violations if "lag p99 grew" in v], found.violations


def test_a_woken_worker_calling_action_for_a_lost_claim_is_a_violation_a_taken_over_call_not() -> (
    None
):
    rows = steady(1, 5)
    freeze = FaultWindow(kinds.WORKER_SIGSTOP, T0 + 3, T0 + 12)
    key = rows[1].key  # planned T0 + 4, while the worker was frozen
    taken_over = {r.key: [r.started] for r in rows} | {key: [T0 + 2.9, T0 + 6.5]}
    assert findings_of(data_of(rows, windows=[freeze], arrivals=taken_over))["b"].ok
    # Written just before SIGSTOP, the call reached Action a few ms after it.
    on_the_wire = taken_over | {key: [T0 + 3.06, T0 + 6.5]}
    assert findings_of(data_of(rows, windows=[freeze], arrivals=on_the_wire))["b"].ok
    called_after_waking = taken_over | {key: [T0 + 6.5, T0 + 12.2]}
    found = findings_of(data_of(rows, windows=[freeze], arrivals=called_after_waking))
    assert any(key in v for v in found["b"].violations), found["b"].violations


def test_no_dispatch_within_the_recovery_bound_after_a_fault_is_a_violation() -> None:
    blackhole = FaultWindow(kinds.proxy_kind("mariadb", "blackhole"), T0 + 5, T0 + 25)
    calls = [RpcCall(PAUSE, 2, T0 + 26, T0 + 26.1, 0)]
    on_time = [*steady(1, 2), row(1, T0 + 30), row(1, T0 + 50)]
    assert recovery_finding(data_of(on_time, calls, windows=[blackhole])).ok
    late = [*steady(1, 2), row(1, T0 + 40), row(1, T0 + 50)]  # 15 s after, bound 10.8 s
    found = recovery_finding(data_of(late, calls, windows=[blackhole]))
    assert any("dispatching after 15.0s" in v for v in found.violations), found.violations


def test_a_fault_whose_recovery_the_next_fault_cut_short_is_measured_after_the_next() -> None:
    first = FaultWindow(kinds.proxy_kind("redis", "blackhole"), T0 + 5, T0 + 10)
    second = FaultWindow(kinds.proxy_kind("mariadb", "blackhole"), T0 + 13, T0 + 20)
    calls = [RpcCall(PAUSE, 2, T0 + 21, T0 + 21.1, 0)]
    rows = [*steady(1, 2), row(1, T0 + 22), row(1, T0 + 30)]  # back 2 s after the second
    found = recovery_finding(data_of(rows, calls, windows=[first, second]))
    assert found.ok, found.violations
    assert found.figure.startswith("1 fault ends measured"), found.figure


def test_an_unanswered_rpc_is_a_violation_unless_the_rpc_server_was_killed() -> None:
    rows = steady(1, 10)
    lost = RpcCall(PAUSE, 1, T0 + 8, T0 + 13, UNANSWERED, "DEADLINE_EXCEEDED")
    found = recovery_finding(data_of(rows, [lost]))
    assert any("got no answer (DEADLINE_EXCEEDED)" in v for v in found.violations)
    kill = FaultWindow(kinds.RPC_SERVER_KILL, T0 + 7, T0 + 7)
    while_killed = recovery_finding(data_of(rows, [lost], windows=[kill]))
    assert not any("no answer" in v for v in while_killed.violations)


def test_a_server_timeout_is_an_answer_while_mariadb_is_slow_but_not_while_it_is_silent() -> None:
    rows = steady(1, 10)
    timed_out = RpcCall(PAUSE, 1, T0 + 8, T0 + 10, UNANSWERED, "DEADLINE_EXCEEDED")
    slow = FaultWindow(kinds.proxy_kind("mariadb", "latency"), T0 + 5, T0 + 15)
    found = recovery_finding(data_of(rows, [timed_out], windows=[slow]))
    assert not any("DEADLINE_EXCEEDED" in v for v in found.violations), found.violations
    assert "1 timed out by the server while a server was slowed" in found.figure
    silent = replace(slow, kind=kinds.proxy_kind("mariadb", "half_open"))
    found = recovery_finding(data_of(rows, [timed_out], windows=[silent]))
    assert any("answered DEADLINE_EXCEEDED after 2.0s, not 503" in v for v in found.violations)


# -- libfaketime --------------------------------------------------------------------------


def test_libfaketime_skews_a_python_process_and_the_children_it_forks() -> None:
    assert Path(LIBFAKETIME).exists(), "install faketime (scripts/ensure-system.sh)"
    script = (
        "import os, sys, time\n"
        "print(time.time())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print(time.time()); sys.stdout.flush(); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "import grpc, pymysql, redis\n"
    )
    for offset, sign in (("-45s", -1), ("+45s", 1)):
        before = time.time()
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env={**os.environ, **faketime_env(offset)},
            timeout=60,
            check=True,
        )
        parent, child = (float(line) for line in done.stdout.split())
        for seen in (parent, child):
            assert abs((seen - before) - sign * 45) < 15, (offset, seen - before)


# -- short real runs ----------------------------------------------------------------------


def short_run(tmp_path: Path, duration_s: float, *faults: tuple[str, float, float]) -> ChaosResult:
    options = network_options(
        duration_s=duration_s,
        seed=3,
        avatars=200,
        workers=4,
        settle_s=8,
        lease_s=SHORT_LEASE_S,
        root=tmp_path / "run",
    )
    plan = FaultPlan(3, duration_s, tuple(Fault(*fault) for fault in faults))
    return run_chaos(options, plan=plan)


def assert_clean(result: ChaosResult, *expected: str) -> str:
    """Every fault was carried out and every invariant held; the report's text."""
    summary = result.summary
    text = render_text(summary)
    assert not summary.injector_errors, text
    assert {w.kind for w in summary.windows} == set(expected), text
    assert [f.key for f in summary.findings] == list("abcdefhi"), text
    assert all(f.ok for f in summary.findings), text
    assert summary.outcomes["success"] > 200, text
    return text


@pytest.mark.timeout(300)
def test_mariadb_blackholed_20s_leaves_the_service_serving_and_dispatching_within_the_bound(
    tmp_path: Path,
) -> None:
    blackhole = kinds.proxy_kind("mariadb", "blackhole")
    result = short_run(tmp_path, 36, (blackhole, 4, 20))

    assert_clean(result, blackhole)
    recovery = next(f for f in result.summary.findings if f.key == "i")
    assert recovery.figure.startswith("1 fault ends measured"), recovery.figure
    assert "zero violations" in render_markdown(result.summary)


@pytest.mark.timeout(300)
def test_a_frozen_worker_and_supervisors_45s_behind_and_ahead_send_no_key_twice(
    tmp_path: Path,
) -> None:
    freeze_s = 3 * SHORT_LEASE_S
    result = short_run(
        tmp_path,
        50,
        (kinds.WORKER_SIGSTOP, 4, freeze_s),
        (kinds.SKEWED_BEHIND, 14, 12),
        (kinds.SKEWED_AHEAD, 28, 12),
    )

    text = assert_clean(result, kinds.WORKER_SIGSTOP, kinds.SKEWED_BEHIND, kinds.SKEWED_AHEAD)
    assert result.data is not None
    freeze = next(w for w in result.data.windows if w.kind == kinds.WORKER_SIGSTOP)
    repeated = {k: a for k, a in result.data.arrivals.items() if len(a) > 1}
    # The only repeats a freeze may cause are calls the worker made before it froze,
    # redone by the worker that took the claim over: never a call after it woke.
    woken = {
        k: a for k, a in repeated.items() if len(a) > 2 or min(a) >= freeze.start + FREEZE_SLACK_S
    }
    assert woken == {}, (woken, text)
    skewed = [w.detail for w in result.summary.windows if w.kind.startswith("second_")]
    assert all("log clock -45s" in d or "log clock +45s" in d for d in skewed), skewed


@pytest.mark.timeout(300)
def test_etcd_blackholed_action_half_open_and_redis_and_mariadbd_killed_are_all_recovered(
    tmp_path: Path,
) -> None:
    etcd, action = kinds.proxy_kind("etcd", "blackhole"), kinds.proxy_kind("action", "half_open")
    result = short_run(
        tmp_path,
        56,
        (etcd, 3, 6),
        (action, 9, 10),
        (kinds.REDIS_KILL9, 30, 2),
        (kinds.MARIADB_KILL9, 43, 3),
    )

    text = assert_clean(result, etcd, action, kinds.REDIS_KILL9, kinds.MARIADB_KILL9)
    report = render_report([result.summary, result.summary])
    assert "## Scenario `network`: zero violations" in report, text
