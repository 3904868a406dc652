"""A real Prometheus server on a free loopback port, in a temp dir, and its HTTP API.

Used by the observability tests: it scrapes the service's ``/metrics`` every
second (job ``me2-scheduler``, as in ``etc/prometheus/prometheus.yml``),
evaluates the alert rules it is given every second, and answers PromQL
through ``/api/v1/query``. Started from Debian's ``prometheus`` binary and
stopped by its PID, like the servers in ``testing.servers``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from me2_devkit.testing.servers import ServerStartError, _Server, find_binary

JOB = "me2-scheduler"
_CONFIG = """\
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files: [{rules}]
scrape_configs:
  - job_name: {job}
    metrics_path: {path}
    static_configs:
      - targets: [{targets}]
"""


class PrometheusQueryError(ServerStartError):
    """Prometheus answered a query with an error (for example, it does not parse)."""


@dataclass
class PrometheusServer(_Server):
    """``prometheus`` scraping ``targets`` (``host:port``) every ``interval``.

    ``rule_files`` are copied into the server's dir and loaded; ``metrics_path``
    is the scraped path of every target.
    """

    targets: tuple[str, ...] = ()
    rule_files: tuple[Path, ...] = ()
    interval: str = "1s"
    metrics_path: str = "/metrics"
    job: str = JOB
    extra_args: tuple[str, ...] = field(default=())

    def start(self) -> PrometheusServer:
        """Write the config, start the server and wait until it is ready."""
        self.root.mkdir(parents=True, exist_ok=True)
        rules = []
        for source in self.rule_files:
            copy = self.root / source.name
            shutil.copyfile(source, copy)
            rules.append(json.dumps(str(copy)))
        config = self.root / "prometheus.yml"
        text = _CONFIG.format(
            interval=self.interval,
            rules=", ".join(rules),
            job=self.job,
            path=json.dumps(self.metrics_path),
            targets=", ".join(json.dumps(t) for t in self.targets),
        )
        config.write_text(text)
        argv = [
            find_binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            *self.extra_args,
        ]
        self._launch(argv, 30)
        self._wait_ready(30)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ServerStartError(f"prometheus not ready in {deadline_s}s (log: {self.log_path})")

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; return its ``data``. Raises PrometheusQueryError."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as exc:  # 400/422: the expression is wrong
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{path} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate an instant PromQL query now; return its series (vector or scalar as one).

        Raises PrometheusQueryError when Prometheus rejects it.
        """
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets_up(self) -> list[dict[str, Any]]:
        """The active targets whose last scrape succeeded."""
        active = self.api("targets")["activeTargets"]
        return [t for t in active if t["health"] == "up"]

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups, with each rule's health and last error."""
        return self.api("rules")["groups"]


_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_OPENERS, _CLOSERS = "([{", ")]}"


def _top_level_comparisons(expr: str) -> list[tuple[int, str]]:
    """``(position, operator)`` of each comparison outside brackets and quotes."""
    found, depth, quote, i = [], 0, "", 0
    while i < len(expr):
        char = expr[i]
        if quote:
            quote = "" if char == quote and expr[i - 1] != "\\" else quote
        elif char in "\"'`":
            quote = char
        elif char in _OPENERS or char in _CLOSERS:
            depth += 1 if char in _OPENERS else -1
        elif depth == 0:
            op = next((op for op in _COMPARISONS if expr.startswith(op, i)), "")
            if op and not expr.startswith(("=~", "!~"), i):
                found.append((i, op))
                i += len(op)
                continue
        i += 1
    return found


def threshold_lhs(expr: str) -> str:
    """The left-hand side of ``<lhs> <comparison> <number expression>``, else ``expr``.

    An alert expression such as ``rate(x[10m]) < 0.9`` returns nothing while
    the service is healthy; its left-hand side is what must return a series
    for the rule to be able to fire at all.
    """
    comparisons = _top_level_comparisons(expr)
    if len(comparisons) != 1:
        return expr
    at, op = comparisons[0]
    threshold = expr[at + len(op) :].strip()
    if threshold.startswith("bool "):
        threshold = threshold[len("bool ") :]
    if not threshold or any(c not in "0123456789.e+-*/ ()" for c in threshold):
        return expr
    return expr[:at].strip()
