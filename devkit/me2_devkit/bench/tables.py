"""Markdown pieces of the benchmark report: the intro and the detail tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from me2_devkit.bench.report import Results

SCALE_UNITS = {"k": 1_000, "M": 1_000_000}


def scale_value(label: str) -> int:
    """``10k`` → 10000 (for sorting scale labels)."""
    if label and label[-1] in SCALE_UNITS:
        return int(label[:-1]) * SCALE_UNITS[label[-1]]
    return int(label) if label.isdigit() else 0


def num(value: float) -> str:
    """A figure for people: thousands separated, 3 significant digits below 100."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def show(results: Results, name: str, unit: str = "") -> str:
    value = results.get(name)
    if value is None:
        return "–"
    runs = results.count(name)
    spread = ""
    if runs > 1:
        values = results.runs[name]
        spread = f" ({num(min(values))}–{num(max(values))})"
    return f"{num(value)}{(' ' + unit) if unit else ''}{spread}"


def intro(results: Results) -> str:
    """Machine, versions, load, and how the figures were taken."""
    m = results.machine
    v = ", ".join(f"{name} {version}" for name, version in results.versions.items())
    before = " ".join(f"{x:.2f}" for x in results.load_before)
    after = " ".join(f"{x:.2f}" for x in results.load_after)
    cores = float(m.get("cores", "1") or 1)
    share = results.other_cpu_seconds / max(results.seconds * cores, 1e-9)
    idle = (
        f"other processes used {results.other_cpu_seconds:,.0f} CPU-seconds meanwhile,"
        f" {share:.0%} of the box's {cores:.0f} cores over the run"
        f" ({'about idle' if share < 0.05 else 'NOT idle: figures are lower than on an idle box'})"
    )
    settings = ", ".join(f"{k}={v}" for k, v in results.settings.items())
    lines = [
        f"Produced by `me2-dev bench` on {results.started:%Y-%m-%d %H:%M} UTC"
        f" in {results.seconds / 60:.1f} min.",
        "",
        f"- **Machine**: {m.get('cores')} cores, {m.get('cpu')}, {m.get('memory')} memory,"
        f" Linux {m.get('kernel')}",
        f"- **Versions**: {v}",
        f"- **Load average** (1/5/15 min) before: {before}; after: {after} (the benchmark's"
        f" own load counts in 'after'). Apart from the benchmark (whose processes are all its"
        f" children), {idle}.",
        f"- **Settings**: {settings}",
        "- Each figure is the median of the runs; the range over runs follows in brackets.",
        "  The service runs as the real process tree (`me2-scheduler run`) against the",
        "  benchmark's own MariaDB, Redis and Action simulator, all on this box. MariaDB",
        "  is durable: its redo log is flushed to disk at every commit",
        "  (`innodb_flush_log_at_trx_commit=1`, the server's default).",
    ]
    return "\n".join(lines)


# The burst table's columns after the Action latency: (title, figure, unit).
BURST_COLUMNS = (
    ("Dispatches/s", "rate", "/s"),
    ("Start-to-start/s", "start_rate", "/s"),
    ("Window", "seconds", "s"),
    ("Dispatched", "dispatched", ""),
    ("Succeeded", "success", ""),
    ("Repeated keys", "repeated_keys", ""),
)


def burst_section(results: Results) -> str:
    rows = []
    for latency in ("0ms", "5ms"):
        prefix = f"burst.{latency}"
        if results.get(f"{prefix}.rate") is None:
            continue
        cells = [show(results, f"{prefix}.{name}", unit) for _, name, unit in BURST_COLUMNS]
        rows.append([latency.replace("ms", " ms"), *cells])
    if not rows:
        return ""
    header = ["Action latency", *(title for title, _, _ in BURST_COLUMNS)]
    text = (
        "## Burst\n\nA backlog due at once, dispatched by"
        f" {results.settings.get('MaxWorkers', '?')} workers. *Dispatches/s*: dispatches over the"
        " window from the first dispatch's start (history, ms) to the moment the last outcome"
        " was seen in MySQL (polled every 50 ms). *Repeated keys*: Action calls that repeated"
        " an idempotency key (a slot dispatched twice) — must be 0.\n\n"
    )
    return text + markdown(header, rows)


# What every steady run shows, here and in the Action-latency table: (title, figure, unit).
RATES_AND_LAGS = (
    ("Offered", "offered", "/s"),
    ("Throughput", "throughput", "/s"),
    *((f"Lag {q}", f"lag_{q}_ms", "ms") for q in ("p50", "p99", "max")),
)
# The steady table's columns.
STEADY_COLUMNS = (
    *RATES_AND_LAGS,
    ("Dispatched", "dispatched", ""),
    ("Seeding overran", "seeded_late_s", "s"),
)


def steady_section(results: Results) -> str:
    rows = [
        [show(results, f"{prefix}.{name}", unit) for _, name, unit in STEADY_COLUMNS]
        for prefix in ("steady", "steady_fit")
        if results.get(f"{prefix}.lag_p99_ms") is not None
    ]
    if not rows:
        return ""
    header = [title for title, _, _ in STEADY_COLUMNS]
    text = (
        "## Steady\n\nAvatars due at a fixed rate (whole-second due times, as the table"
        " stores them): the target 500/s, and half the measured burst capacity (a rate this"
        " box sustains, so the lag shows the design rather than a backlog). Lag = start −"
        " planned, from the history's `lag_ms`. Throughput: dispatches over the window from"
        " the first due second to the last start.\n\n"
    )
    return text + markdown(header, rows)


def scale_section(results: Results) -> str:
    labels = sorted(
        {n.split(".")[1] for n in results.runs if n.startswith("scale.") and n.count(".") == 2},
        key=scale_value,
    )
    if not labels:
        return ""
    columns = [
        ("claim_ms", "Claim 500 (ms)"),
        ("rebuild_s", "rebuild-index (s)"),
        ("verify_s", "verify-index (s)"),
        ("overdue_page_ms", "Sweep query page (ms)"),
        ("sweep_ms", "Whole sweep (ms)"),
        ("redis_mib_per_1M", "Redis MiB per 1 M"),
        ("mysql_mib", "MySQL table (MiB)"),
        ("load_s", "Bulk load (s)"),
    ]
    rows = [
        [label, *(show(results, f"scale.{label}.{key}") for key, _ in columns)]
        for label in labels
        if results.get(f"scale.{label}.rebuild_s") is not None
    ]
    text = (
        "## Scale\n\n500 × a few avatars due, the rest due over the next day. Claim: one"
        " `claim_due` of 500 out of N. Sweep query: one page (1,000) of the seed's overdue"
        " query; whole sweep: `reconcile.sweep` (query pages + Redis presence check). Redis:"
        " `used_memory` growth after the first rebuild, scaled to 1 M. MySQL:"
        " `data_length + index_length` of `avatar_schedules`.\n\n"
    )
    return text + markdown(["Avatars", *(title for _, title in columns)], rows)


def footprint_section(results: Results) -> str:
    rss = sorted(
        (n.removeprefix("footprint.rss."), n)
        for n in results.runs
        if n.startswith("footprint.rss.") and not n.endswith("worker_max")
    )
    cpu = sorted(
        (n.removeprefix("footprint.cpu_ms."), n)
        for n in results.runs
        if n.startswith("footprint.cpu_ms.")
    )
    if not rss:
        return ""
    text = (
        "## Footprint\n\nPeak RSS (VmRSS, sampled every 0.5 s) of each process under the"
        " 0 ms burst, by process title; and CPU time (utime + stime) each part spent per"
        " dispatch over that burst.\n\n"
    )
    table = markdown(
        ["Process", "Peak RSS"], [[label, show(results, n, "MiB")] for label, n in rss]
    )
    cpu_table = markdown(
        ["Part", "CPU ms per dispatch"], [[label, show(results, n)] for label, n in cpu]
    )
    return text + table + "\n\n" + cpu_table


LIMITS = (
    ("gRPC unary calls/s to the simulator, 10 processes", "limits.grpc_calls"),
    ("MariaDB UPDATE+INSERT transactions/s, 10 connections", "limits.mysql_txns"),
    ("Redis claim, avatars/s (batches of 500)", "limits.redis_claims"),
)


def limits_section(results: Results) -> str:
    rows = [[title, show(results, name, "/s")] for title, name in LIMITS]
    return "## Limits\n\nEach part alone, measured in the same run.\n\n" + markdown(
        ["Limit", "Median"], rows
    )


def notes_section(results: Results) -> str:
    if not results.notes:
        return ""
    return "## Notes and profile\n\n" + "\n\n".join(results.notes)


ANATOMY_STEPS = (
    ("pop", "Redis: pop the claims (LPOP with a count)"),
    ("read_row", "MySQL: read the rows (one SELECT … IN)"),
    ("renew_lease", "Redis: renew the leases before Action (one script)"),
    ("action", "gRPC: Action.ScheduleAction, one call each"),
    ("record", "MySQL: record the outcomes (one transaction)"),
    ("ack", "Redis: ack (reschedule, one script)"),
    ("dispatch", "**a whole dispatch** (`Dispatcher.dispatch_batch`)"),
)
ANATOMY_PARTS = ("worker", "mariadb", "redis", "simulator")


def anatomy_section(results: Results) -> str:
    """CPU ms of each step of a dispatch, in the worker and in each server."""
    if results.get("anatomy.dispatch.worker") is None:
        return ""
    rows = []
    for step, title in ANATOMY_STEPS:
        costs = [results.get(f"anatomy.{step}.{part}") or 0.0 for part in ANATOMY_PARTS]
        wall = results.get(f"anatomy.{step}.wall") or 0.0
        calls = [results.get(f"anatomy.{step}.{kind}_calls") or 0.0 for kind in ("mysql", "redis")]
        timings = [*costs, sum(costs), wall]
        rows.append([title, *(f"{ms:.3f}" for ms in timings), *(f"{n:g}" for n in calls)])
    size = results.get("anatomy.batch_size") or 1
    text = (
        "## Anatomy of a dispatch\n\nOne caller in one process, no service running: each"
        f" step of a worker's dispatch run back to back over batches of {size:g} claims"
        " (`Schedule.DispatchBatch`), as a worker takes them from a backlog; CPU ms per"
        " dispatch, from /proc and `process_time`. The whole dispatch's excess over its"
        " steps is logging, metrics and glue. With every part on one box, the cores pay the"
        " *total* column: this bounds dispatches/s before any contention. The command"
        " columns count round trips per dispatch: statements and pings MariaDB answered;"
        " scripts and pops Redis answered.\n\n"
    )
    header = [
        "Step",
        "worker",
        "MariaDB",
        "Redis",
        "simulator",
        "total CPU",
        "wall ms",
        "MariaDB commands",
        "Redis commands",
    ]
    return text + markdown(header, rows)
