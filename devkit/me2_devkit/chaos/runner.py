"""One chaos run, start to verdict: servers, service, avatars, faults, settle, audit, report.

Everything runs on loopback in a temp dir: its own MariaDB, Redis (or a given
Redis Cluster) and Action simulator, and ``me2-scheduler run`` as a real
process tree on compressed time (intervals of 2–6 s, retry 1 s, a 3 s lease
over a 1 s Action timeout). Every process is started here and stopped by PID.

The in-flight scenario (``inflight_options``) runs with ``MaxInFlight`` 400,
a 2 s Action timeout (so a 1 s Action is slow, not failing) and a 6 s lease,
with a ``Gate`` in front of Action that can shut its port; it scrapes the
service's metrics to show the breaker opening and closing (check (g)).
"""

from __future__ import annotations

import logging
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from me2_devkit.chaos import collect
from me2_devkit.chaos.audit import audit, counts_by_outcome
from me2_devkit.chaos.breaker_watch import MetricsWatch, Sample, breaker_finding
from me2_devkit.chaos.data import AuditInput, Bounds, Finding
from me2_devkit.chaos.gate import Gate
from me2_devkit.chaos.injector import Injector, Targets
from me2_devkit.chaos.journal import ENABLE, HistoryMark, Journal, RpcBurst
from me2_devkit.chaos.plan import ACTION_DOWN, FaultPlan, make_inflight_plan, make_plan
from me2_devkit.chaos.report import RunSummary, render_text
from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.configs import service_config, write_config
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port, temp_root
from me2_devkit.testing.stack import Service, Simulator, cli_argv
from me2_scheduler.config import RedisConf, load_config
from me2_scheduler.errors import SchedulerError

log = logging.getLogger("me2_devkit.chaos")

DATABASE = "chaos"
REDIS_KEY = "me2:chaos"
ACTION_TIMEOUT_MS = 1000
LEASE_S = 3
SETUP_DEADLINE_S = 120.0
FAULTS, INFLIGHT = "faults", "inflight"  # the scenarios

BOUNDS = Bounds(
    max_interval_s=6, lease_s=LEASE_S, scan_interval_s=5, sweep_grace_s=2, poll_interval_s=0.2,
    action_timeout_s=ACTION_TIMEOUT_MS / 1000, max_failures=5,
)  # fmt: skip
INFLIGHT_MAX = 400
INFLIGHT_TIMEOUT_MS = 2000  # over the slow phase's 1 s: slow, not failing
INFLIGHT_LEASE_S = 6  # over the timeout, with room to record 40 calls at once


class ChaosError(SchedulerError):
    """The chaos run could not be carried out (a server or the service did not start)."""


@dataclass(frozen=True)
class ChaosOptions:
    """How long, how many avatars, which seed; ``root`` keeps the run's files there."""

    duration_s: float = 300.0
    seed: int = 1
    avatars: int = 2000
    workers: int = 10
    settle_s: float = 20.0
    rpc_rate: float = 4.0  # burst calls per second
    faults: bool = True
    root: Path | None = None
    scenario: str = FAULTS
    max_in_flight: int = 0  # 0: MaxWorkers, one call per worker
    action_timeout_ms: int = ACTION_TIMEOUT_MS
    lease_s: int = LEASE_S

    @property
    def bounds(self) -> Bounds:
        """The audit's timing bounds for this run's config."""
        return replace(BOUNDS, lease_s=self.lease_s, action_timeout_s=self.action_timeout_ms / 1000)


def inflight_options(**overrides: object) -> ChaosOptions:
    """Options of the in-flight scenario: MaxInFlight 400, a 2 s timeout, a 6 s lease."""
    fields: dict[str, object] = {
        "scenario": INFLIGHT, "max_in_flight": INFLIGHT_MAX,
        "action_timeout_ms": INFLIGHT_TIMEOUT_MS, "lease_s": INFLIGHT_LEASE_S,
    }  # fmt: skip
    fields.update(overrides)
    return ChaosOptions(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RedisTarget:
    """The Redis the service uses: a node the run may restart, or a cluster's seeds."""

    host: str
    type: str = "node"
    server: RedisServer | None = None

    @property
    def conf(self) -> RedisConf:
        return RedisConf(host=self.host, type=self.type, key=REDIS_KEY)


@dataclass
class Stack:
    """The run's servers and service, and where their files are."""

    root: Path
    mariadb: MariaDBServer
    redis: RedisTarget
    simulator: Simulator
    options: ChaosOptions
    gate: Gate | None = None  # in front of Action (the in-flight scenario)
    config_path: Path = field(init=False)
    service: Service = field(init=False)

    def write_config(self, name: str) -> Path:
        """The service's config on compressed time (see ``bounds``), written as ``name``.yaml."""
        action, dsn = self.simulator.address, self.mariadb.dsn(DATABASE) + "&timeout=3s"
        timeout_ms = self.options.action_timeout_ms
        metrics_port = free_port()
        settings = service_config(
            data_source=dsn,
            redis_host=self.redis.host,
            redis_key=REDIS_KEY,
            listen_on=f"127.0.0.1:{free_port()}",
            Mysql={"DataSource": dsn, "PoolSize": 4},
            Redis={"Host": self.redis.host, "Type": self.redis.type, "Key": REDIS_KEY},
            ActionRpc={"Endpoints": [self.action_address], "Timeout": timeout_ms},
            DiaryRpc={"Endpoints": [action]},
            Schedule=self.schedule(),
            ActionSchedule={"MinIntervalHours": 2 / 3600, "MaxIntervalHours": 6 / 3600},
            DiarySchedule={"CronExpression": "0 3 1 1 *"},
            Log={"Encoding": "plain", "Level": "info"},
            Prometheus={"Host": "127.0.0.1", "Port": metrics_port},
        )
        return write_config(self.root / f"{name}.yaml", settings)

    @property
    def action_address(self) -> str:
        """Where the service calls Action: through the gate when there is one."""
        return self.gate.address if self.gate else self.simulator.address

    @property
    def metrics_url(self) -> str:
        """The supervisor's /metrics (every process's figures)."""
        conf = load_config(str(self.config_path)).prometheus
        return f"http://{conf.host}:{conf.port}{conf.path}"

    def schedule(self) -> dict[str, float]:
        """``Schedule`` on seconds, matching ``bounds``."""
        options = self.options
        return {
            "ScanInterval": BOUNDS.scan_interval_s,
            "MaxWorkers": options.workers,
            "MaxInFlight": options.max_in_flight,
            "PollInterval": BOUNDS.poll_interval_s,
            "ClaimBatch": 200,
            "LeaseSeconds": options.lease_s,
            "RetryDelaySeconds": 1,
            "MaxConsecutiveFailures": BOUNDS.max_failures,
            "SweepGraceSeconds": BOUNDS.sweep_grace_s,
            "ShutdownTimeoutSeconds": 10,
        }

    @property
    def rpc_target(self) -> str:
        for line in self.config_path.read_text().splitlines():
            if line.startswith("ListenOn:"):
                return line.split(":", 1)[1].strip()
        raise ChaosError("no ListenOn in the chaos config")


@contextmanager
def started_stack(options: ChaosOptions, redis: RedisTarget | None) -> Iterator[Stack]:
    """Start MariaDB, Redis (unless given), the simulator and the service; stop them all after."""
    root = options.root or temp_root("me2-chaos-")
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stops:
        mariadb = MariaDBServer(root=root / "mariadb").start()
        stops.callback(mariadb.stop)
        if redis is None:
            server = RedisServer(root=root / "redis").start()
            stops.callback(server.stop)
            redis = RedisTarget(server.address, "node", server)
        options_sim = ("--seed", str(options.seed))
        simulator = Simulator("action", root, options_sim).start()
        stops.callback(simulator.stop)
        gate = None
        if options.scenario == INFLIGHT:
            gate = Gate(simulator.address).start()
            stops.callback(gate.stop)
        stack = Stack(root, mariadb, redis, simulator, options, gate)
        mariadb.create_database(DATABASE)
        stack.config_path = stack.write_config("scheduler")
        _init_db(stack.config_path)
        stack.service = Service(stack.config_path, root).start()
        stops.callback(stack.service.stop)
        stack.service.wait_ready(SETUP_DEADLINE_S)
        yield stack


def _init_db(config_path: Path) -> None:
    done = subprocess.run(
        cli_argv("init-db", "-f", str(config_path)), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ChaosError(f"init-db failed: {done.stderr.strip()[-500:]}")


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


def run_chaos(
    options: ChaosOptions, *, plan: FaultPlan | None = None, redis: RedisTarget | None = None
) -> ChaosResult:
    """Run the service under ``plan`` (default: ``make_plan(seed, duration)``) and audit it.

    Raises ChaosError when the stack cannot be started, ValueError for a
    duration too short for the plan's outages.
    """
    if plan is None:
        make = make_inflight_plan if options.scenario == INFLIGHT else make_plan
        plan = (
            make(options.seed, options.duration_s)
            if options.faults
            else FaultPlan(options.seed, options.duration_s)
        )
    started = time.time()
    with started_stack(options, redis) as stack:
        summary = _run(options, plan, stack)
    summary.wall_s = time.time() - started
    if summary.ok and options.root is None:
        shutil.rmtree(stack.root, ignore_errors=True)
    return ChaosResult(summary, stack.root)


def _run(options: ChaosOptions, plan: FaultPlan, stack: Stack) -> RunSummary:
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
        data = AuditInput(
            dispatches=reader.dispatches(), schedules=reader.schedules(),
            calls_per_key=collect.action_counts(stack.simulator.address),
            journal=journal.snapshot(), windows=list(injector.windows),
            index=collect.index_snapshot(stack.redis.conf), bounds=options.bounds, t_end=t_end,
        )  # fmt: skip
        peak = collect.action_stats(stack.simulator.address).peak_in_flight
    finally:
        watch.stop()
        journal.close()
        control.close()
    extra = []
    if options.scenario == INFLIGHT:
        extra.append(_breaker(options, plan, t0, samples, peak))
    summary = _summary(options, plan, stack, data, injector.errors, t0, extra)
    if options.root is not None or not summary.ok:  # kept: can be audited again from this file
        collect.dump(data, stack.root / "audit-input.json")
        (stack.root / "report.txt").write_text(render_text(summary), encoding="utf-8")
    return summary


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
    def start_second() -> Service:
        config = stack.write_config("scheduler-second")
        return Service(config, stack.root).start("service-second")

    return Targets(
        service=stack.service, mariadb=stack.mariadb, simulator=control, journal=journal,
        burst=burst, action_timeout_ms=stack.options.action_timeout_ms,
        auto_paused_ids=reader.auto_paused_ids, start_second=start_second,
        redis=stack.redis.server, gate=stack.gate,
    )  # fmt: skip


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
        seed=options.seed, duration_s=options.duration_s, avatars=options.avatars, plan=plan,
        windows=data.windows, findings=audit(data) + extra,
        outcomes=counts_by_outcome(data.dispatches),
        action_calls=sum(data.calls_per_key.values()),
        rpc_calls=Counter(f"{c.source} {c.method}" for c in data.journal),
        injector_errors=list(errors), redis=stack.redis.type, started_at=t0,
        settings=_settings(options),
    )  # fmt: skip


def _settings(options: ChaosOptions) -> dict[str, str]:
    b = options.bounds
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
    }
