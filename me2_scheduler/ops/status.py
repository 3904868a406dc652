"""``me2-scheduler status``: the schedules, the index, the diary runs and the service at a glance.

Everything comes from cheap reads: grouped counts in MySQL, one script and
one ZRANGE in Redis, the last few ``diary_runs`` rows, and the supervisor's
``/healthz`` (200 while every child is up, with a line per dependency that is
degraded; 503 with what is down) on ``Prometheus.Host:Port`` when that is
configured.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Any

from me2_scheduler.clock import from_epoch
from me2_scheduler.config import Config, PrometheusConf
from me2_scheduler.storage.diary_runs import DiaryRun, DiaryRunStore
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.timefmt import Display

NEXT_DUE = 10
DIARY_RUNS = 5
HEALTH_TIMEOUT_S = 2.0
HEALTH_PATH = "/healthz"
SECTIONS = ("avatars", "auto_paused", "index", "queues", "next_due", "diary_runs", "service")
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def collect(
    config: Config,
    store: MysqlStore,
    index: DelayIndex,
    runs: DiaryRunStore,
    *,
    next_n: int = NEXT_DUE,
    diary_n: int = DIARY_RUNS,
) -> dict[str, Any]:
    """Every section of the status, as plain values (the ``--json`` document).

    Raises StoreError or RedisIndexError; an unreachable service is a value,
    not an error.
    """
    display = Display(config.timezone)
    return {
        "avatars": store.counts_by_status(),
        "auto_paused": store.auto_paused_count(),
        "index": {"built": index.has_meta()},
        "queues": index.sizes(config.schedule.sweep_grace_seconds),
        "next_due": [
            _due(avatar_id, score, display) for avatar_id, score in index.next_due(next_n)
        ],
        "diary_runs": [diary_run_record(run, display) for run in runs.latest(diary_n)],
        "service": service_health(config.prometheus),
    }


def _due(avatar_id: int, score: float, display: Display) -> dict[str, Any]:
    return {"avatar_id": avatar_id, "due_at": display.format(from_epoch(score)), "due_epoch": score}


def diary_run_record(run: DiaryRun, display: Display) -> dict[str, Any]:
    """A diary run for people and JSON: its date, fire time, state and counts."""
    return {
        "run_date": run.run_date.isoformat(),
        "fire_time": display.format(run.fire_time),
        "status": run.status,
        "success": run.success_count,
        "failure": run.failure_count,
        "total": run.total,
    }


def health_url(conf: PrometheusConf) -> str | None:
    """The supervisor's ``/healthz`` URL, or None when ``Prometheus.Host`` is not set."""
    host = conf.host.strip()
    if not host:
        return None
    host = _WILDCARD_HOSTS.get(host, host).strip("[]")
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{conf.port}{HEALTH_PATH}"


def service_health(conf: PrometheusConf, timeout_s: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
    """The supervisor's health from ``/healthz``.

    ``state`` is ``up`` (200), ``degraded`` (503), ``unexpected`` (any other
    answer), ``not reachable`` or ``not configured`` (``Prometheus.Host``
    unset). ``problems`` holds the answer's lines but a 200's leading ``ok``:
    what is down, and what is degraded (``degraded: action: ...``, which a
    200 carries too). Never raises.
    """
    url = health_url(conf)
    if url is None:
        return {"state": "not configured", "url": None}
    try:
        # No proxy: an operator's http_proxy must not route a loopback health check.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout_s) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as exc:  # 503: some child is down
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"state": "not reachable", "url": url, "error": str(reason)}
    state = {200: "up", 503: "degraded"}.get(status, "unexpected")
    text = body.decode("utf-8", errors="replace")
    problems = [line.strip() for line in text.splitlines() if line.strip()]
    if status == 200 and problems[:1] == ["ok"]:
        problems = problems[1:]
    return {"state": state, "url": url, "http_status": status, "problems": problems}


def render(status: dict[str, Any], zone_label: str = "") -> str:
    """The status as text for people."""
    lines = [
        "avatars:      " + _pairs(status["avatars"]),
        f"auto-paused:  {status['auto_paused']}",
        "index:        " + ("built" if status["index"]["built"] else "missing (rebuild pending)"),
        "queues:       " + _pairs(status["queues"]),
        f"next due{f' ({zone_label})' if zone_label else ''}:",
    ]
    due_rows = [(str(d["avatar_id"]), d["due_at"]) for d in status["next_due"]]
    lines += _table(("avatar_id", "due_at"), due_rows) if due_rows else ["  (none)"]
    lines.append("diary runs:")
    run_keys = ("run_date", "fire_time", "status", "success", "failure")
    run_rows = [tuple(str(run[key]) for key in run_keys) for run in status["diary_runs"]]
    lines += _table(run_keys, run_rows) if run_rows else ["  (none yet)"]
    lines += _service_lines(status["service"])
    return "\n".join(lines)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _service_lines(service: dict[str, Any]) -> list[str]:
    state = service["state"]
    if state == "not configured":
        return ["service: not configured (Prometheus.Host is not set)"]
    if state == "not reachable":
        return [f"service: not reachable ({service['url']}: {service['error']})"]
    lines = [f"service: {state} ({service['url']}, HTTP {service['http_status']})"]
    return lines + [f"  {problem}" for problem in service["problems"]]
