"""One chaos run, start to verdict: servers, service, avatars, faults, settle, audit, report.

Everything runs on loopback in a temp dir (``stack``): its own MariaDB, Redis
(or a given Redis Cluster) and Action simulator, and ``me2-scheduler run``
as a real process tree on compressed time (intervals of 2–6 s, retry 1 s, a
3 s lease over a 1 s Action timeout). Every process is started here and
stopped by PID.

The in-flight scenario (``inflight_options``) runs with ``MaxInFlight`` 400,
a 2 s Action timeout (so a 1 s Action is slow, not failing) and a 6 s lease,
with a ``Gate`` in front of Action that can shut its port; it scrapes the
service's metrics to show the breaker opening and closing (check (g)).

The network scenario (``network_options``) puts a fault proxy in front of
every server and adds (h), times on the server clock, and (i), recovery after
each fault. Every run's journal and fault windows are moved onto MySQL's
clock before the audit, and history rows stamped by a skewed host onto it too.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from me2_devkit.chaos import collect
from me2_devkit.chaos.audit import audit, counts_by_outcome
from me2_devkit.chaos.breaker_watch import MetricsWatch, Sample, breaker_finding
from me2_devkit.chaos.data import AuditInput, Finding
from me2_devkit.chaos.injector import Injector, Targets
from me2_devkit.chaos.journal import ENABLE, HistoryMark, Journal, RpcBurst
from me2_devkit.chaos.netplan import JITTER_MS, JITTER_SPREAD_MS, LATENCY_MS
from me2_devkit.chaos.options import (
    INFLIGHT,
    ChaosOptions,
    inflight_options,
    network_options,
    options_for,
)
from me2_devkit.chaos.plan import ACTION_DOWN, FaultPlan
from me2_devkit.chaos.recovery import recovery_finding
from me2_devkit.chaos.report import RunSummary, render_text
from me2_devkit.chaos.servertime import (
    mysql_offset,
    server_clock_finding,
    shift_calls,
    shift_windows,
)
from me2_devkit.chaos.stack import (
    DATABASE,
    SETUP_DEADLINE_S,
    ChaosError,
    RedisTarget,
    Stack,
    started_stack,
)
from me2_devkit.simulators import SimulatorControl

log = logging.getLogger("me2_devkit.chaos")

__all__ = [
    "ChaosError",
    "ChaosOptions",
    "ChaosResult",
    "RedisTarget",
    "inflight_options",
    "network_options",
    "options_for",
    "run_chaos",
]


def enable_all(journal: Journal, avatar_ids: list[int]) -> None:
    """Enable every avatar through the API, retrying until each answered 0."""
    deadline = time.monotonic() + SETUP_DEADLINE_S

    def enable(avatar_id: int) -> None:
        while journal.call(ENABLE, avatar_id, "setup").code != 0:
            if time.monotonic() > deadline:
                raise ChaosError(f"avatar {avatar_id} could not be enabled")
            time.sleep(0.2)

    with ThreadPoolExecutor(8, thread_name_prefix="chaos-enable") as pool:
        list(pool.map(enable, avatar_ids))


@dataclass
class ChaosResult:
    """The run's summary (with its verdict) and where its files are."""

    summary: RunSummary
    root: Path
    data: AuditInput | None = None  # what the audit read (on the server clock)


def run_chaos(
    options: ChaosOptions, *, plan: FaultPlan | None = None, redis: RedisTarget | None = None
) -> ChaosResult:
    """Run the service under ``plan`` (default: ``options.plan()``) and audit it.

    Raises ChaosError when the stack cannot be started, ValueError for a
    duration too short for the plan's outages.
    """
    if plan is None:
        plan = options.plan()
    started = time.time()
    with started_stack(options, redis) as stack:
        summary, data = _run(options, plan, stack)
    summary.wall_s = time.time() - started
    if summary.ok and options.root is None:
        shutil.rmtree(stack.root, ignore_errors=True)
    return ChaosResult(summary, stack.root, data)


def _run(options: ChaosOptions, plan: FaultPlan, stack: Stack) -> tuple[RunSummary, AuditInput]:
    rng = random.Random(options.seed)
    reader = collect.MysqlReader(stack.mariadb.port, DATABASE)
    journal = Journal(stack.rpc_target, HistoryMark("127.0.0.1", stack.mariadb.port, DATABASE))
    avatar_ids = list(range(1, options.avatars + 1))
    control = SimulatorControl(stack.simulator.address)
    watch = MetricsWatch(stack.metrics_url)
    try:
        enable_all(journal, avatar_ids)
        burst = RpcBurst(journal, avatar_ids, random.Random(rng.random()), options.rpc_rate)
        injector = Injector(plan, _targets(stack, journal, burst, control, reader), rng)
        watch.start()
        t0 = _inject(injector, burst, stack, options.duration_s)
        time.sleep(options.settle_s)  # the settle window is part of the method, not a poll
        t_end = time.time()
        samples = watch.stop()
        code = stack.service.stop()
        if code != 0:
            injector.errors.append(f"the service exited {code} on SIGTERM")
        data = _collect(stack, journal, injector, t_end)
        peak = collect.action_stats(stack.simulator.address).peak_in_flight
    finally:
        watch.stop()
        journal.close()
        control.close()
    extra = []
    if options.scenario == INFLIGHT:
        extra.append(_breaker(options, plan, t0, samples, peak))
    if options.network:
        extra += [server_clock_finding(data), recovery_finding(data)]
    summary = _summary(options, plan, stack, data, injector.errors, t0, extra)
    if options.root is not None or not summary.ok:  # kept: can be audited again from this file
        collect.dump(data, stack.root / "audit-input.json")
        (stack.root / "report.txt").write_text(render_text(summary), encoding="utf-8")
    return summary, data


def _collect(stack: Stack, journal: Journal, injector: Injector, t_end: float) -> AuditInput:
    """What the audit reads, with this host's times moved onto MySQL's clock."""
    offset = mysql_offset(stack.mariadb.port, DATABASE)
    reader = collect.MysqlReader(stack.mariadb.port, DATABASE)
    return AuditInput(
        dispatches=reader.dispatches(),
        schedules=reader.schedules(),
        calls_per_key=collect.action_counts(stack.simulator.address),
        journal=shift_calls(journal.snapshot(), offset),
        windows=shift_windows(injector.windows, offset),
        index=collect.index_snapshot(stack.redis.conf),
        bounds=stack.options.bounds,
        t_end=t_end + offset,
        arrivals=stack.simulator.arrivals(),
    )


def _inject(injector: Injector, burst: RpcBurst, stack: Stack, duration_s: float) -> float:
    """Run the faults and the RPC burst for ``duration_s``; return when they started.

    Interrupted (Ctrl-C), the faults cut their waits short and put every
    server back before the stack is stopped.
    """
    t0 = time.time()
    burst.start()
    injector.start(t0)
    try:
        _watch(stack, t0 + duration_s, injector)
    except BaseException:
        injector.abort()
        raise
    finally:
        burst.stop()
        if not injector.join(timeout_s=120):
            injector.errors.append("faults still running 120 s after the run's end")
    return t0


def _targets(
    stack: Stack, journal: Journal, burst: RpcBurst, control: SimulatorControl, reader
) -> Targets:
    return Targets(
        service=stack.service,
        mariadb=stack.mariadb,
        simulator=control,
        journal=journal,
        burst=burst,
        action_timeout_ms=stack.options.action_timeout_ms,
        auto_paused_ids=reader.auto_paused_ids,
        start_second=stack.start_second,
        redis=stack.redis.server,
        gate=stack.gate,
        proxies=stack.network.proxies if stack.network else None,
        start_skewed=stack.start_second,
        lease_s=stack.options.lease_s,
    )


def _watch(stack: Stack, until: float, injector: Injector) -> None:
    """Wait for the run's end; stop early if the supervisor itself died."""
    while time.time() < until:
        if not stack.service.process.alive():
            injector.abort()
            injector.errors.append("the supervisor exited during the run")
            return
        time.sleep(0.5)


def _breaker(
    options: ChaosOptions, plan: FaultPlan, t0: float, samples: list[Sample], peak: int
) -> Finding:
    """(g) over the times Action was down (its port shut, then opened again)."""
    downs = [(t0 + fault.at_s, t0 + fault.end_s) for fault in plan.of(ACTION_DOWN)]
    return breaker_finding(samples, downs, peak, options.max_in_flight)


def _summary(
    options, plan, stack, data: AuditInput, errors, t0: float, extra: list[Finding]
) -> RunSummary:
    return RunSummary(
        seed=options.seed,
        duration_s=options.duration_s,
        avatars=options.avatars,
        plan=plan,
        windows=data.windows,
        findings=audit(data) + extra,
        outcomes=counts_by_outcome(data.dispatches),
        action_calls=sum(data.calls_per_key.values()),
        rpc_calls=Counter(f"{c.source} {c.method}" for c in data.journal),
        injector_errors=list(errors),
        redis=stack.redis.type,
        started_at=t0,
        settings=_settings(options),
    )


def _settings(options: ChaosOptions) -> dict[str, str]:
    b = options.bounds
    network = {
        "fault proxies": "MariaDB, Redis, Action and etcd (Action found through etcd); latency"
        f" {LATENCY_MS:g} ms, jitter {JITTER_MS:g}+0..{JITTER_SPREAD_MS:g} ms",
        "recovery bound (i)": f"{b.recovery_after_s:.1f} s = ScanInterval + LeaseSeconds + 4 x"
        " PollInterval + ActionRpc.Timeout + 1 s",
    }
    return {
        "scenario": options.scenario,
        "MaxInFlight": str(options.max_in_flight or options.workers),
        "intervals": f"2-{b.max_interval_s:g} s (MinIntervalHours 2/3600, MaxIntervalHours 6/3600)",
        "Action timeout / lease": f"{b.action_timeout_s:g} s / {b.lease_s:g} s",
        "retry / auto-pause": f"RetryDelaySeconds 1, MaxConsecutiveFailures {b.max_failures}",
        "poll / scan / sweep grace": f"{b.poll_interval_s:g} s / {b.scan_interval_s:g} s / "
        f"{b.sweep_grace_s:g} s",
        "workers": str(options.workers),
        "recovery bound": f"{b.recovery_s:.1f} s = ScanInterval + SweepGraceSeconds + 4 x "
        "PollInterval + ActionRpc.Timeout + 1 s (DATETIME resolution)",
        "gap bound (a)": f"{b.gap_s:.1f} s = MaxInterval + LeaseSeconds + recovery",
        "RPC burst": f"{options.rpc_rate:g} pause/resume/trigger calls per second",
        "settle before the audit": f"{options.settle_s:g} s",
        **(network if options.network else {}),
    }
