"""The chaos suite: its fault plan, its audit on hand-made histories, and a short real run.

The audit's checks are pure functions over plain values, so each is shown to
catch the violation it exists for (a lost avatar, a slot dispatched twice, an
auto-pause at the wrong count, a dispatch after a pause, a wrong counter, a
stale index) before the short run shows that the service has none of them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from me2_devkit import chaos_cli
from me2_devkit.chaos import plan as kinds
from me2_devkit.chaos.audit import AuditInput, Finding, IndexSnapshot, audit
from me2_devkit.chaos.breaker_watch import Sample, breaker_finding
from me2_devkit.chaos.data import Dispatch, Schedule
from me2_devkit.chaos.gate import Gate
from me2_devkit.chaos.injector import FaultWindow
from me2_devkit.chaos.journal import ENABLE, PAUSE, RESUME, TRIGGER, RpcCall
from me2_devkit.chaos.plan import OUTAGES, Scale, make_inflight_plan, make_plan
from me2_devkit.chaos.report import render_markdown, render_text
from me2_devkit.chaos.runner import ChaosOptions, inflight_options, run_chaos
from me2_devkit.simulators import ActionSimulator, SimulatorControl, serve
from me2_scheduler.clients import ActionClient
from me2_scheduler.config import RpcClientConf
from me2_scheduler.errors import DownstreamError

from .fixtures_chaos import BOUNDS, T0
from .support import wait_until

# -- the plan -------------------------------------------------------------------


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert make_plan(11, 300) == make_plan(11, 300)
    assert make_plan(11, 300) != make_plan(12, 300)


def test_the_full_plan_has_the_target_counts_and_lengths() -> None:
    plan = make_plan(1, 300)
    counts = plan.counts()
    assert counts[kinds.WORKER_KILL] >= 10 and counts[kinds.POLLER_KILL] >= 3
    assert counts[kinds.RPC_SERVER_KILL] >= 2
    lengths = {f.kind: f.duration_s for f in plan.faults if f.duration_s}
    assert lengths[kinds.MARIADB_STOP] == 20 and lengths[kinds.SECOND_SUPERVISOR] == 60
    assert lengths[kinds.ACTION_FAILING] == lengths[kinds.ACTION_SLOW] == 30
    assert counts[kinds.REDIS_RESTART] == 1


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("duration", [40.0, 60.0, 300.0, 900.0])
def test_outages_never_overlap_and_all_faults_fit_in_the_run(seed: int, duration: float) -> None:
    plan = make_plan(seed, duration)
    scale = Scale.for_duration(duration)
    outages = sorted((f for f in plan.faults if f.kind in OUTAGES), key=lambda f: f.at_s)
    for first, second in itertools.pairwise(outages):
        if (first.kind, second.kind) != (kinds.ACTION_FAILING, kinds.ACTION_SLOW):
            assert second.at_s >= first.end_s + scale.recovery_gap_s - 0.2, (first, second)
    assert all(f.at_s > 0 and f.end_s <= duration - scale.cooldown_s + 0.2 for f in plan.faults)
    assert set(plan.counts()) == set(kinds.KINDS)


def test_a_run_too_short_for_its_outages_is_refused() -> None:
    with pytest.raises(ValueError, match="too short"):
        make_plan(1, 20)


# -- the audit on hand-made histories -----------------------------------------

_ids = iter(range(1, 10**6))


def row(avatar: int, started: float, outcome: str = "success", **kw: object) -> Dispatch:
    planned = kw.pop("planned", started)
    fields = {"trigger": "auto", "finished": started, "key": f"{avatar}:{int(planned) * 1000}"}
    fields.update(kw)
    return Dispatch(next(_ids), avatar, planned=planned, started=started, outcome=outcome, **fields)  # type: ignore[arg-type]


def call(method: str, avatar: int, at: float, code: int = 0, **kw: object) -> RpcCall:
    return RpcCall(method, avatar, at, at + 0.01, code, **kw)  # type: ignore[arg-type]


def schedule(avatar: int, status: str = "active", **kw: object) -> Schedule:
    fields = {"pause_reason": None, "schedule_count": 0, "failed_count": 0, "next_due": 0}
    fields.update(kw)
    return Schedule(avatar, status, **fields)  # type: ignore[arg-type]


def run_audit(
    rows: list[Dispatch],
    schedules: list[Schedule],
    calls: list[RpcCall],
    *,
    windows: list[FaultWindow] = (),
    keys: dict[str, int] | None = None,
    due: dict[int, float] | None = None,
    t_end: float | None = None,
) -> dict[str, Finding]:
    data = AuditInput(
        dispatches=rows,
        schedules={s.avatar_id: s for s in schedules},
        calls_per_key=keys if keys is not None else {r.key: 1 for r in rows if r.key},
        journal=[call(ENABLE, s.avatar_id, T0 - 10) for s in schedules] + calls,
        windows=list(windows),
        index=IndexSnapshot(due=due or {}, inflight=frozenset()),
        bounds=BOUNDS,
        t_end=t_end if t_end is not None else max([r.finished for r in rows] + [T0]) + 1,
    )
    return {finding.key: finding for finding in audit(data)}


def steady(avatar: int, n: int, every: float = 4.0, start: float = T0) -> list[Dispatch]:
    return [row(avatar, start + i * every) for i in range(n)]


def test_a_clean_history_passes_every_check() -> None:
    rows = steady(1, 10)
    final = schedule(1, schedule_count=10, next_due=int(T0 + 40))
    findings = run_audit(rows, [final], [], due={1: T0 + 40})
    assert all(f.ok for f in findings.values()), {k: f.violations for k, f in findings.items()}


def test_an_avatar_left_undispatched_is_reported_lost() -> None:
    rows = [*steady(1, 3), row(1, T0 + 60)]
    findings = run_audit(rows, [schedule(1, schedule_count=4, next_due=1)], [], due={1: 1})
    assert findings["a"].violations and "avatar 1" in findings["a"].violations[0]


def test_a_gap_across_an_outage_is_excused_but_not_a_longer_one() -> None:
    rows = [*steady(1, 3), row(1, T0 + 60)]
    mariadb = FaultWindow(kinds.MARIADB_STOP, T0 + 10, T0 + 40)
    findings = run_audit(
        rows, [schedule(1, schedule_count=4, next_due=1)], [], windows=[mariadb], due={1: 1}
    )
    assert findings["a"].ok
    short = FaultWindow(kinds.MARIADB_STOP, T0 + 10, T0 + 12)
    findings = run_audit(
        rows, [schedule(1, schedule_count=4, next_due=1)], [], windows=[short], due={1: 1}
    )
    assert not findings["a"].ok


def test_a_slot_recorded_twice_without_a_crash_is_a_violation_and_with_one_is_not() -> None:
    twice = [row(1, T0, planned=T0), row(1, T0 + 1, planned=T0)]
    final = schedule(1, schedule_count=2, next_due=1)
    assert not run_audit(twice, [final], [], due={1: 1})["b"].ok
    kill = FaultWindow(kinds.WORKER_KILL, T0 + 0.5, T0 + 0.5)
    assert run_audit(twice, [final], [], windows=[kill], due={1: 1})["b"].ok


def test_a_slot_sent_to_action_twice_needs_a_crash_between() -> None:
    rows = [row(1, T0)]
    keys = {rows[0].key: 2}
    final = schedule(1, schedule_count=1, next_due=1)
    assert not run_audit(rows, [final], [], keys=keys, due={1: 1})["b"].ok
    restart = FaultWindow(kinds.REDIS_RESTART, T0 - 0.5, T0 + 1)
    assert run_audit(rows, [final], [], keys=keys, windows=[restart], due={1: 1})["b"].ok


def test_a_cut_slot_redone_under_another_key_is_a_violation() -> None:
    rows = [row(1, T0 + 4, planned=T0 + 4)]
    keys = {f"1:{int(T0) * 1000}": 1, rows[0].key: 1}  # the slot at T0 never recorded
    final = schedule(1, schedule_count=1, next_due=1)
    assert not run_audit(rows, [final], [], keys=keys, due={1: 1})["b"].ok
    # A pause and resume in between legitimately replaced the slot.
    calls = [call(PAUSE, 1, T0 + 1, hist_before=0, hist_after=0)]
    calls += [call(RESUME, 1, T0 + 2, hist_before=0, hist_after=0)]
    assert run_audit(rows, [final], calls, keys=keys, due={1: 1})["b"].ok


def test_the_slot_before_a_cut_one_is_not_taken_for_its_redo() -> None:
    # A failure at T0 retried one second later: the retry reaches Action and is
    # cut, and the run ends before its lease brings it back. The failure row
    # started within the second before the cut slot, but it is that slot's past.
    rows = [row(1, T0, "failure", planned=T0)]
    keys = {rows[0].key: 1, f"1:{int(T0 + 1) * 1000}": 1}
    final = schedule(1, failed_count=1, next_due=int(T0 + 1))
    assert run_audit(rows, [final], [], keys=keys, due={1: T0 + 1})["b"].ok


def failures(avatar: int, n: int, start: float = T0) -> list[Dispatch]:
    return [row(avatar, start + i, "failure") for i in range(n)]


def test_five_consecutive_failures_must_leave_the_avatar_paused_by_failures() -> None:
    paused = schedule(1, "paused", pause_reason="failures", failed_count=5)
    assert run_audit(failures(1, 5), [paused], [])["c"].ok
    still_active = schedule(1, failed_count=5, next_due=1)
    assert not run_audit(failures(1, 5), [still_active], [], due={1: 1})["c"].ok


def test_an_auto_pause_at_four_failures_is_a_violation() -> None:
    paused = schedule(1, "paused", pause_reason="failures", failed_count=4)
    findings = run_audit(failures(1, 4), [paused], [])
    assert not findings["c"].ok


def test_a_resume_resets_the_count_so_five_failures_across_it_do_not_pause() -> None:
    rows = failures(1, 3) + failures(1, 2, start=T0 + 10)
    first_three = rows[2].id
    resume = call(RESUME, 1, T0 + 5, hist_before=first_three, hist_after=first_three)
    pause = call(PAUSE, 1, T0 + 4, hist_before=first_three, hist_after=first_three)
    final = schedule(1, failed_count=2, next_due=1)
    findings = run_audit(rows, [final], [pause, resume], due={1: 1})
    assert findings["c"].ok and findings["e"].ok, (findings["c"], findings["e"])


def test_an_auto_dispatch_after_a_pause_returned_is_a_violation() -> None:
    rows = [*steady(1, 2), row(1, T0 + 12)]
    pause = call(PAUSE, 1, T0 + 6, hist_before=rows[1].id, hist_after=rows[1].id)
    final = schedule(1, "paused", pause_reason="user", schedule_count=3)
    assert not run_audit(rows, [final], [pause])["d"].ok
    trigger = call(TRIGGER, 1, T0 + 8)  # a trigger may dispatch a paused avatar (manual)
    manual = [*steady(1, 2), row(1, T0 + 8, trigger="manual")]
    assert run_audit(manual, [final], [pause, trigger])["d"].ok


def test_counters_that_disagree_with_history_are_violations() -> None:
    rows = steady(1, 3) + failures(1, 1, start=T0 + 20)
    right = schedule(1, schedule_count=3, failed_count=1, next_due=1)
    assert run_audit(rows, [right], [], due={1: 1})["e"].ok
    wrong = schedule(1, schedule_count=4, failed_count=0, next_due=1)
    assert len(run_audit(rows, [wrong], [], due={1: 1})["e"].violations) == 2


def test_an_index_that_differs_from_mysql_is_a_violation() -> None:
    schedules = [schedule(1, next_due=100), schedule(2, "paused", pause_reason="user")]
    assert run_audit([], schedules, [], due={1: 100})["f"].ok
    assert not run_audit([], schedules, [], due={1: 101})["f"].ok
    assert not run_audit([], schedules, [], due={1: 100, 2: 5})["f"].ok
    assert not run_audit([], schedules, [], due={})["f"].ok


# -- the command line ---------------------------------------------------------------


def chaos_command() -> click.Group:
    group = click.Group()
    chaos_cli.register(group)
    return group


def test_the_chaos_command_offers_duration_seed_avatars_and_report() -> None:
    result = CliRunner().invoke(chaos_command(), ["chaos", "--help"])
    assert result.exit_code == 0
    for option in ("--duration", "--seed", "--avatars", "--report"):
        assert option in result.output


def test_a_run_shorter_than_its_outages_is_a_usage_error() -> None:
    result = CliRunner().invoke(chaos_command(), ["chaos", "--duration", "10"])
    assert result.exit_code == 2 and "--duration" in result.output


# -- a short real run ---------------------------------------------------------------


@pytest.mark.timeout(600)
def test_a_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    options = ChaosOptions(duration_s=60, seed=7, avatars=300, workers=4, settle_s=15)

    result = run_chaos(options)

    summary = result.summary
    text = render_text(summary)
    assert not summary.injector_errors, text
    done = {w.kind for w in summary.windows}
    assert done == set(kinds.KINDS), text
    assert [f.key for f in summary.findings] == list("abcdef")
    assert all(f.ok for f in summary.findings), text
    assert summary.outcomes["success"] > 300 and summary.outcomes["failure"] > 0, text
    markdown = render_markdown(summary)
    assert "zero violations" in markdown and "## Machine" in markdown


# -- the in-flight scenario: Action calls in flight ----------------------------------


def test_the_inflight_plan_is_slow_then_half_failing_then_down_with_kills_under_load() -> None:
    plan = make_inflight_plan(3, 300)
    phases = [f for f in plan.faults if f.kind in OUTAGES]
    assert [f.kind for f in phases] == [
        kinds.ACTION_LAGGING,
        kinds.ACTION_HALF_FAILING,
        kinds.ACTION_DOWN,
    ]
    for first, second in itertools.pairwise(phases):
        assert second.at_s == first.end_s
    kills = plan.of(kinds.WORKER_KILL)
    assert any(phases[0].at_s < k.at_s < phases[0].end_s for k in kills)
    assert phases[-1].end_s <= 300 - 16  # room to see the breaker close
    with pytest.raises(ValueError, match="too short"):
        make_inflight_plan(3, 30)


def samples(points: list[tuple[float, float]]) -> list[Sample]:
    return [Sample(T0 + at, rejected, 0.0, 40.0) for at, rejected in points]


def test_the_breaker_check_wants_rejections_while_down_and_none_soon_after() -> None:
    down = [(T0 + 10, T0 + 20)]
    good = samples([(5, 0), (12, 30), (19, 90), (24, 95), (30, 95), (45, 95)])
    assert breaker_finding(good, down, 400, 400).ok
    never = samples([(5, 0), (12, 0), (19, 0), (40, 0)])
    assert "rejected nothing" in breaker_finding(never, down, 400, 400).violations[0]
    late = samples([(5, 0), (19, 90), (45, 120), (50, 120)])  # still rising 25 s after
    assert "still rose" in breaker_finding(late, down, 400, 400).violations[0]
    assert not breaker_finding([], down, 400, 400).ok


def answers(client: ActionClient, key: str) -> bool:
    """Whether Action answered a call for avatar 1 under ``key``."""
    try:
        client.schedule_action(1, key, "auto")
    except DownstreamError:
        return False
    return True


def test_a_shut_gate_makes_action_unavailable_and_an_open_one_reaches_it_again() -> None:
    sim = serve(ActionSimulator(), "127.0.0.1:0")
    gate = Gate(sim.address).start()
    client = ActionClient(RpcClientConf(endpoints=(gate.address,), timeout_ms=2000))
    try:
        assert client.schedule_action(1, "1:1", "auto").action_id > 0
        gate.shut()
        with pytest.raises(DownstreamError) as failed:
            client.schedule_action(1, "1:2", "auto")
        assert failed.value.unavailable
        gate.open()
        # the channel reconnects after its backoff
        wait_until(lambda: answers(client, "1:3"), 15, "Action to be reached again")
        with SimulatorControl(sim.address) as control:
            assert control.stats().calls_per_key["1:1"] == 1
    finally:
        client.close()
        gate.stop()
        sim.stop(grace=0)


@pytest.mark.timeout(300)
def test_a_short_inflight_run_keeps_every_invariant_and_the_breaker_opens_and_closes() -> None:
    options = inflight_options(duration_s=44, seed=5, avatars=300, workers=4, settle_s=8)

    result = run_chaos(options)

    summary = result.summary
    text = render_text(summary)
    assert not summary.injector_errors, text
    assert {w.kind for w in summary.windows} >= {
        kinds.ACTION_LAGGING,
        kinds.ACTION_HALF_FAILING,
        kinds.ACTION_DOWN,
        kinds.WORKER_KILL,
    }, text
    assert [f.key for f in summary.findings] == list("abcdefg"), text
    assert all(f.ok for f in summary.findings), text
    assert summary.outcomes["success"] > 300 and summary.outcomes["failure"] > 0, text
