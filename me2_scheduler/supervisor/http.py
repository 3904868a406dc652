"""The supervisor's HTTP endpoint: ``/metrics`` for every process, and ``/healthz``.

Metrics use prometheus_client's multiprocess mode (its ``multiprocess.py``):

- ``MetricsDir.create`` points ``PROMETHEUS_MULTIPROC_DIR`` at an empty dir
  *before* anything imports prometheus_client (the library picks its value
  class at import time), so every child forked afterwards writes its metrics
  there. The dir is the operator's ``PROMETHEUS_MULTIPROC_DIR`` if set (its
  ``*.db`` files wiped at start), else a fresh temp dir removed at exit.
- ``render_metrics`` builds a fresh ``CollectorRegistry`` with a
  ``MultiProcessCollector`` per scrape: it reads files, never a database, so
  a scrape costs the same whatever the number of avatars.
- The arbiter calls ``mark_process_dead`` for every reaped child.

``StatusServer`` serves both paths from a ``ThreadingHTTPServer`` thread of
the supervisor. It holds no gRPC, Redis or MySQL object, so forking children
while it runs is safe. ``/healthz`` answers 200 ``ok`` while every child slot
has a live process, the rpc_server listens and MySQL and Redis answer, else
503 with one line per problem (``down: worker[2]``, ``down: mysql: <why>``);
a dependency the children report ``degraded`` (Action, Diary, etcd) is listed
under ``ok`` and keeps the 200 (see ``health``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from me2_scheduler.config import PrometheusConf
from me2_scheduler.console.proxy import forward as forward_to_console
from me2_scheduler.console.proxy import is_console_path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HEALTH_PATH = "/healthz"
TEXT = "text/plain; charset=utf-8"

log = logging.getLogger(__name__)

DEGRADED_PREFIX = "degraded:"

HealthCheck = Callable[[], list[str]]
"""Returns the problems, one line each; [] or only ``degraded: ...`` lines mean healthy."""


def health_answer(problems: list[str]) -> tuple[int, str]:
    """``/healthz``'s status and body: 503 and the problems, or 200 ``ok`` and what is degraded."""
    failing = [line for line in problems if not line.startswith(DEGRADED_PREFIX)]
    if failing:
        return 503, "\n".join(problems) + "\n"
    return 200, "\n".join(["ok", *problems]) + "\n"


@dataclass(frozen=True)
class MetricsDir:
    """The multiprocess dir of one supervisor; ``owned`` dirs are removed by ``remove``."""

    path: Path
    owned: bool

    @classmethod
    def create(cls) -> MetricsDir:
        """Prepare an empty dir and export it as ``PROMETHEUS_MULTIPROC_DIR``.

        Must run before prometheus_client is imported in this process; logs an
        error if it already was (children's metrics would then be lost).
        Raises OSError when the dir cannot be made or wiped.
        """
        given = os.environ.get(MULTIPROC_ENV, "")
        if "prometheus_client" in sys.modules and not given:
            log.error("prometheus_client was imported before %s was set", MULTIPROC_ENV)
        if given:
            path = Path(given)
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):  # files of a previous run's processes
                stale.unlink()
            made = cls(path, owned=False)
        else:
            made = cls(Path(tempfile.mkdtemp(prefix="me2-scheduler-metrics-")), owned=True)
        os.environ[MULTIPROC_ENV] = str(made.path)
        return made

    def remove(self) -> None:
        """Delete the dir if this supervisor made it (after every child is gone)."""
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def render_metrics(path: str) -> tuple[bytes, str]:
    """Every process's metrics in ``path`` as Prometheus text: ``(body, content type)``.

    Raises OSError or ValueError when the files cannot be read.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int, path: str) -> None:
    """Forget a dead process's ``live*`` gauges (its counters stay, so sums never drop)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, conf: PrometheusConf, metrics_dir: str, health: HealthCheck) -> None:
        if ":" in conf.host:
            self.address_family = socket.AF_INET6
        self.metrics_path = conf.path
        self.metrics_dir = metrics_dir
        self.health = health
        super().__init__((conf.host.strip("[]"), conf.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds an idle keep-alive connection may hold its thread

    def do_GET(self) -> None:  # the name http.server dispatches to
        path = urlsplit(self.path).path
        if is_console_path(path):  # the console child answers; this thread only relays
            forward_to_console(self, self.server.metrics_dir)
        elif path == self.server.metrics_path:
            self._metrics()
        elif path == HEALTH_PATH:
            status, body = health_answer(self.server.health())
            self._send(status, TEXT, body.encode())
        else:
            hint = f"not found: {path}; try {self.server.metrics_path} or {HEALTH_PATH}\n"
            self._send(404, TEXT, hint.encode())

    def do_POST(self) -> None:
        if is_console_path(urlsplit(self.path).path):
            forward_to_console(self, self.server.metrics_dir)
        else:
            self.close_connection = True  # its body is not read
            self._send(405, TEXT, b"only the console takes POST\n")

    def _metrics(self) -> None:
        try:
            body, content_type = render_metrics(self.server.metrics_dir)
        except (OSError, ValueError) as exc:
            log.error("cannot render metrics: %s", exc)
            self._send(500, TEXT, f"cannot render metrics: {exc}\n".encode())
            return
        self._send(200, content_type, body)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would drown the log: only at debug level."""
        log.debug("http %s " + format, self.client_address[0], *args)


class StatusServer:
    """``/metrics`` and ``/healthz`` on ``Prometheus.Host:Port``, served by a thread."""

    def __init__(self, conf: PrometheusConf, metrics_dir: str, health: HealthCheck) -> None:
        """Bind the port (raises OSError when it cannot) and start serving."""
        self._server = _Server(conf, metrics_dir, health)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info(
            "serving metrics on http://%s:%d%s and %s", conf.host, self.port, conf.path, HEALTH_PATH
        )

    @property
    def port(self) -> int:
        """The bound port (useful when Port was 0 in a test)."""
        return self._server.server_address[1]

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class SupervisorMetrics:
    """The supervisor's part in metrics: restart counts, dead children, the HTTP server.

    With ``metrics_dir`` None (an ``Arbiter`` built without ``run_service``)
    every method does nothing.
    """

    def __init__(self, metrics_dir: str | None) -> None:
        self.metrics_dir = metrics_dir
        self.server: StatusServer | None = None

    def start(self, conf: PrometheusConf, roles: Iterable[str], health: HealthCheck) -> bool:
        """Create the restart series; serve HTTP when ``conf.host`` is set.

        Returns False, after one error line, when the port cannot be bound. The
        arbiter binds it before the preflight and then exits 3 (cannot boot):
        a restart would not free the port, and an operator who asked for
        metrics wants them, not a service that runs unobserved.
        """
        if self.metrics_dir is None:
            return True
        from me2_scheduler import metrics  # only now: the multiprocess dir is exported

        for role in roles:
            metrics.CHILD_RESTARTS.labels(role=role)  # the series exists at 0 from the start
        if not conf.host:
            return True
        try:
            self.server = StatusServer(conf, self.metrics_dir, health)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s:%d (Prometheus.Host/Port): %s; not starting",
                conf.host,
                conf.port,
                exc,
            )
            return False
        return True

    def child_restarted(self, role: str) -> None:
        """Count one restart of a ``role`` child in ``scheduler_child_restarts_total``."""
        if self.metrics_dir is not None:
            from me2_scheduler import metrics

            metrics.CHILD_RESTARTS.labels(role=role).inc()

    def child_reaped(self, pid: int) -> None:
        """Forget a reaped child's live gauges (its counters stay, so sums never drop)."""
        if self.metrics_dir is not None:
            mark_process_dead(pid, self.metrics_dir)

    def close(self) -> None:
        """Stop the HTTP server, if one runs."""
        if self.server is not None:
            self.server.close()
            self.server = None
