"""The chaos run's report: one screen of text, and the Markdown kept in docs/RELIABILITY.md."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata

from me2_devkit.chaos.audit import SAMPLE
from me2_devkit.chaos.data import Finding
from me2_devkit.chaos.injector import FaultWindow
from me2_devkit.chaos.plan import RPC_BURST, FaultPlan


@dataclass
class RunSummary:
    """What the report says about one run."""

    seed: int
    duration_s: float
    avatars: int
    plan: FaultPlan
    windows: list[FaultWindow]
    findings: list[Finding]
    outcomes: Counter[str]
    action_calls: int
    rpc_calls: Counter[str]
    injector_errors: list[str] = field(default_factory=list)
    redis: str = "node"
    started_at: float = 0.0
    wall_s: float = 0.0
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(len(f.violations) for f in self.findings) + len(self.injector_errors)

    @property
    def ok(self) -> bool:
        return self.violations == 0


def machine() -> dict[str, str]:
    """The host and versions the run used."""
    return {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "me2-scheduler": _version("me2-scheduler"),
        "grpcio": _version("grpcio"),
        "redis-py": _version("redis"),
        "redis-server": _tool_version(["redis-server", "--version"]),
        "mariadbd": _tool_version(["mariadbd", "--version"]),
        "load average at the report (1/5/15 min)": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(argv: list[str]) -> str:
    """The first line a server binary prints for ``--version``, without its path."""
    from me2_devkit.testing.servers import ServerStartError, find_binary

    try:
        path = find_binary(argv[0])
        done = subprocess.run([path, *argv[1:]], capture_output=True, text=True, timeout=10)
    except (ServerStartError, OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (done.stdout.strip().splitlines() or ["unknown"])[0]
    return first.replace(path, argv[0])[:100]


def fault_lines(summary: RunSummary) -> list[tuple[str, int, int, float]]:
    """(kind, planned, done, seconds on) per fault kind, in the plan's order of kinds."""
    planned = summary.plan.counts()
    done: Counter[str] = Counter(w.kind for w in summary.windows)
    seconds: Counter[str] = Counter()
    for window in summary.windows:
        seconds[window.kind] += window.end - window.start
    return [(kind, planned[kind], done[kind], seconds[kind]) for kind in planned]


def render_text(summary: RunSummary) -> str:
    """The one-screen report printed at the end of a run."""
    verdict = "PASS" if summary.ok else f"FAIL ({summary.violations} violations)"
    lines = [
        f"chaos run: seed {summary.seed}, {summary.duration_s:g}s, {summary.avatars} avatars,"
        f" Redis {summary.redis} — {verdict}",
        "faults (planned/done, seconds on):",
    ]
    for kind, planned, done, seconds in fault_lines(summary):
        on = f", {seconds:.0f}s" if seconds >= 1 else ""
        lines.append(f"  {kind:<18} {done}/{planned}{on}")
    lines += [f"  injector error: {error}" for error in summary.injector_errors]
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(summary.outcomes.items()))
    rpcs = ", ".join(f"{n} {k}" for k, n in sorted(summary.rpc_calls.items()))
    lines += [f"dispatches: {outcomes}; Action calls {summary.action_calls}", f"rpc calls: {rpcs}"]
    for finding in summary.findings:
        mark = "ok  " if finding.ok else "FAIL"
        lines.append(f"({finding.key}) {mark} {finding.title}: {finding.figure}")
        lines += [f"       {v}" for v in finding.violations[:SAMPLE]]
        if len(finding.violations) > SAMPLE:
            lines.append(f"       ... and {len(finding.violations) - SAMPLE} more")
    return "\n".join(lines) + "\n"


def render_markdown(summary: RunSummary, host: dict[str, str] | None = None) -> str:
    """docs/RELIABILITY.md for one run: the verdict, the invariants, the faults, the machine."""
    return render_report([summary], host)


def render_report(summaries: list[RunSummary], host: dict[str, str] | None = None) -> str:
    """docs/RELIABILITY.md for one run, or for several scenarios run one after the other."""
    host = host or machine()
    first = summaries[0]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(first.started_at or time.time()))
    total = sum(s.violations for s in summaries)
    verdict = "**zero violations**" if not total else f"**{total} violations**"
    out = ["# Reliability report", ""]
    if len(summaries) == 1:
        out += [
            f"Written by `me2-dev chaos` on {when}: {first.duration_s:g} s of faults on"
            f" {first.avatars} avatars (seed {first.seed}, Redis {first.redis});"
            f" {verdict}. Rerun it with `make chaos` (or `me2-dev chaos --seed"
            f" {first.seed} --duration {first.duration_s:g} --avatars {first.avatars}`).",
        ]
        out += _scenario_md(first, "##")
    else:
        names = ", ".join(f"`{_scenario(s)}` ({s.duration_s:g} s)" for s in summaries)
        out.append(
            f"Written by `me2-dev chaos` on {when}: the scenarios {names}, one after the"
            f" other, each on {first.avatars} avatars (seed {first.seed}, Redis"
            f" {first.redis}); {verdict}. Rerun it with `make chaos`."
        )
        for summary in summaries:
            result = "zero violations" if summary.ok else f"{summary.violations} violations"
            out += ["", f"## Scenario `{_scenario(summary)}`: {result}"]
            out += _scenario_md(summary, "###")
    out += ["", "## How the audit decides", "", *METHOD]
    out += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in host.items()]
    out += [f"- wall time of the `{_scenario(s)}` run: {s.wall_s:.0f} s" for s in summaries]
    return "\n".join([*out, ""])


def _scenario(summary: RunSummary) -> str:
    return summary.settings.get("scenario", "faults")


def _scenario_md(summary: RunSummary, level: str) -> list[str]:
    """One run's invariants, faults, work and settings, under ``level`` headings."""
    out = ["", f"{level} Invariants (DESIGN §2.3)", "", "| | invariant | result | figures |"]
    out.append("|---|---|---|---|")
    for f in summary.findings:
        result = "holds" if f.ok else f"{len(f.violations)} violations"
        out.append(f"| ({f.key}) | {f.title} | {result} | {f.figure} |")
    out += _violations_md(summary.findings, level + "#")
    out += ["", f"{level} Faults injected", "", "| fault | planned | done | seconds on |"]
    out.append("|---|---|---|---|")
    for kind, planned, done, seconds in fault_lines(summary):
        out.append(f"| {kind} | {planned} | {done} | {f'{seconds:.0f}' if seconds >= 1 else '-'} |")
    out += [f"- injector error: {e}" for e in summary.injector_errors]
    out += _details_md(summary, level + "#")
    out += ["", f"{level} Work done", ""]
    out += [f"- dispatches recorded: {n} {k}" for k, n in sorted(summary.outcomes.items())]
    out.append(f"- calls that reached the Action simulator: {summary.action_calls}")
    out += [f"- {n} `{k}` calls" for k, n in sorted(summary.rpc_calls.items())]
    out += ["", f"{level} Settings", ""] + [f"- {k}: {v}" for k, v in summary.settings.items()]
    return out


def _details_md(summary: RunSummary, level: str) -> list[str]:
    """What each fault really did, in time order (seconds from the run's start)."""
    t0 = summary.started_at
    out = ["", f"{level} What each fault did", ""]
    for w in sorted(summary.windows, key=lambda w: w.start):
        if w.kind == RPC_BURST:
            continue
        out.append(f"- {w.start - t0:6.1f}s +{w.end - w.start:4.1f}s {w.kind}: {w.detail}")
    return out


METHOD = [
    "The audit reads `avatar_schedule_history`, `avatar_schedules`, the Action simulator's"
    " calls per idempotency key, the journal of every RPC the run made (sent, returned,"
    " answer, and the avatar's highest history id just before and after) and the windows"
    " in which each fault was really on.",
    "",
    "- **(a)** For every avatar active at the end, each gap between the end of one dispatch"
    " (or a resume) and the start of the next, and from the last one to the end of the run,"
    " minus the time it overlaps an outage (MariaDB down, Redis lost, Action failing or slow)"
    " or a pause, each extended by the recovery bound, must not exceed the gap bound (see"
    " Settings).",
    "- **(b)** Two history rows or two Action calls with one idempotency key need a crash"
    " (kill -9 of a worker or the rpc_server, Redis lost, MariaDB stopped) between them; a"
    " slot cut by a crash must be dispatched again under its own key, not a new one.",
    "- **(c)** Each avatar's rows and its enable/pause/resume calls are replayed through"
    " `policy` (a call falls between the rows its history marks say; an unanswered call may"
    " or may not have applied, and every placement is tried): the final status and pause"
    " reason must be explained, and no auto dispatch may follow an auto-pause.",
    "- **(d)** After a pause answered 0, no auto dispatch may start until a resume, enable or"
    " trigger of that avatar was sent.",
    "- **(e)** `schedule_count` equals the avatar's success rows; `failed_count` equals the"
    " consecutive failures the replay of (c) leaves.",
    "- **(f)** With the service stopped after the settle window: every active avatar is in"
    " exactly one of due and inflight, its due score equals `next_schedule_time`, and no"
    " paused or disabled avatar is in either.",
    "- **(g)** (`--scenario inflight` only) From the service's `/metrics`, scraped every"
    ' 0.5 s: `scheduler_breaker_rejections_total{service="Action"}` rose while Action was'
    " down, stopped rising within 15 s of Action coming back (the channel's reconnect backoff"
    " plus the breaker's 10 s window), and stayed flat to the end of the run.",
    "",
    "The network scenario (`--scenario network`) reaches MariaDB, Redis, Action and etcd"
    " through fault proxies (latency, jitter, resets, blackhole: accepted and never answered,"
    " half-open: the open connections silent for good, new ones fine), freezes the poller and"
    " a worker (SIGSTOP for three leases), kills mariadbd and Redis with -9, and starts"
    " second supervisors under libfaketime 45 s behind and ahead. Its audit is on the"
    " servers' clocks: MySQL notes the insert time of every history row (a trigger of the"
    " run's own), the Action simulator the arrival time of every call; a row stamped by a"
    " host off MySQL's clock is moved onto it before (a)-(f) are checked.",
    "",
    "- **(b)**, frozen worker: a key repeated across a SIGSTOP is allowed only as two calls,"
    " the first before the worker froze (in flight, or its record pending); a woken worker"
    " that calls Action for a claim it lost is a violation.",
    "- **(h)** No history row stamped more than 3 s off MySQL's insert time (a late insert"
    " while MariaDB was slowed excepted); no slot at Action before its planned time; each"
    " next time MinInterval..MaxInterval (success) or RetryDelaySeconds (failure) after the"
    " server time of the record that set it, when no RPC touched the avatar in between;"
    " the lag p99 of slots planned while a host 45 s off was joined at most 1 s over that"
    " of slots that waited with no fault on (slots whose wait overlapped another fault"
    " count on neither side).",
    "- **(i)** After each fault ends, an RPC answers 0/400/404/409 and an auto dispatch is"
    " recorded within ScanInterval + LeaseSeconds + 4 x PollInterval + ActionRpc.Timeout +"
    " 1 s. Every RPC gets an answer within the journal's 5 s deadline (except while the"
    " rpc_server itself was killed): a code, 503 included, or the server's own"
    " DEADLINE_EXCEEDED at its Timeout, the latter only while a server was merely slowed"
    " (latency, jitter); while one is unreachable the answer must be a 503. After each of"
    " Action's phases that fail calls, an operator resumes the avatars it auto-paused, 6 s"
    " after Action answers again.",
]


def _violations_md(findings: list[Finding], level: str = "###") -> list[str]:
    failing = [f for f in findings if not f.ok]
    if not failing:
        return []
    out = ["", f"{level} Violations (first few of each)", ""]
    for f in failing:
        out += [f"- ({f.key}) {v}" for v in f.violations[:SAMPLE]]
    return out
