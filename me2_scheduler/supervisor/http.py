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

``StatusServer`` serves both paths (and ``/console/``, relayed to the console
child, unless ``Console.Host`` gives the console a listener of its own) from a
``ThreadingHTTPServer`` thread of the supervisor. It holds no gRPC, Redis or
MySQL object, so forking children while it runs is safe. ``/healthz``
answers 200 ``ok`` while every child slot has a live process, the rpc_server
listens and MySQL and Redis answer, else
503 with one line per problem (``down: worker[2]``, ``down: mysql: <why>``);
a dependency the children report ``degraded`` (Action, Diary, etcd) is listed
under ``ok`` and keeps the 200 (see ``health``).
"""

from __future__ import annotations

import glob
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
from typing import Any
from urllib.parse import urlsplit

from me2_scheduler.config import ConsoleConf, PrometheusConf
from me2_scheduler.console.proxy import PREFIX as CONSOLE_PREFIX
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

    Raises OSError, ValueError or RuntimeError (a corrupt file) when the
    files cannot be read.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(_WrittenFiles(path))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _WrittenFiles:
    """prometheus_client's ``MultiProcessCollector.collect``, minus files still empty.

    A child creates its ``.db`` file, then sizes it: a scrape in between would
    read zero bytes and fail on the header (``struct.error``), dropping the
    connection. An empty file holds no value yet, so it is passed over.
    """

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self) -> Iterable[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _written(f)]
        return MultiProcessCollector.merge(files, accumulate=True)


def _written(file: str) -> bool:
    try:
        return os.path.getsize(file) > 0
    except FileNotFoundError:  # a dead child's live gauges, removed since the glob
        return False


def mark_process_dead(pid: int, path: str) -> None:
    """Forget a dead process's ``live*`` gauges (its counters stay, so sums never drop)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


@dataclass(frozen=True)
class Listener:
    """One HTTP listener of the supervisor and what it serves.

    ``metrics_path`` None: neither metrics nor ``/healthz`` (the console's own
    listener); ``console``: ``/console/`` is relayed to the console child here.
    """

    host: str
    port: int
    metrics_path: str | None
    console: bool

    @classmethod
    def for_metrics(cls, conf: PrometheusConf, *, console: bool = True) -> Listener:
        """``Prometheus.Host:Port``: metrics and health, and the console unless it has its own."""
        return cls(conf.host, conf.port, conf.path, console)

    @classmethod
    def for_console(cls, conf: ConsoleConf) -> Listener:
        """``Console.Host:Port``: the console alone."""
        return cls(conf.host, conf.port, None, True)

    @property
    def what(self) -> str:
        served = [f"{self.metrics_path} and {HEALTH_PATH}"] if self.metrics_path else []
        served += [f"{CONSOLE_PREFIX}/"] if self.console else []
        return " and ".join(served)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listener: Listener, metrics_dir: str, health: HealthCheck) -> None:
        if ":" in listener.host:
            self.address_family = socket.AF_INET6
        self.listener = listener
        self.metrics_dir = metrics_dir
        self.health = health
        super().__init__((listener.host.strip("[]"), listener.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds an idle keep-alive connection may hold its thread

    def do_GET(self) -> None:  # the name http.server dispatches to
        path = urlsplit(self.path).path
        listener = self.server.listener
        if listener.console and is_console_path(path):  # the console child answers
            forward_to_console(self, self.server.metrics_dir)
        elif listener.metrics_path is not None and path == listener.metrics_path:
            self._metrics()
        elif listener.metrics_path is not None and path == HEALTH_PATH:
            status, body = health_answer(self.server.health())
            self._send(status, TEXT, body.encode())
        else:
            self._send(
                404, TEXT, f"not found: {path}; this listener serves {listener.what}\n".encode()
            )

    def do_POST(self) -> None:
        if self.server.listener.console and is_console_path(urlsplit(self.path).path):
            forward_to_console(self, self.server.metrics_dir)
        else:
            self.close_connection = True  # its body is not read
            self._send(405, TEXT, b"only the console takes POST\n")

    def _metrics(self) -> None:
        try:
            body, content_type = render_metrics(self.server.metrics_dir)
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a corrupt file
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
    """One ``Listener`` served by a thread of the supervisor."""

    def __init__(self, listener: Listener, metrics_dir: str, health: HealthCheck) -> None:
        """Bind the port (raises OSError when it cannot) and start serving."""
        self._server = _Server(listener, metrics_dir, health)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )
        self._thread.start()
        log.info("serving %s on http://%s:%d", listener.what, listener.host, self.port)

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
        self.servers: list[StatusServer] = []

    def start(
        self,
        conf: PrometheusConf,
        roles: Iterable[str],
        health: HealthCheck,
        console: ConsoleConf | None = None,
    ) -> bool:
        """Create the restart series; serve HTTP when ``conf.host`` is set, and the
        console on its own listener when ``console`` is enabled with a ``Host``.

        Returns False, after one error line, when a port cannot be bound. The
        arbiter binds it before the preflight and then exits 3 (cannot boot):
        a restart would not free the port, and an operator who asked for
        metrics wants them, not a service that runs unobserved.
        """
        if self.metrics_dir is None:
            return True
        from me2_scheduler import metrics  # only now: the multiprocess dir is exported

        for role in roles:
            metrics.CHILD_RESTARTS.labels(role=role)  # the series exists at 0 from the start
        own = console if console is not None and console.enabled and console.host else None
        wanted = [(Listener.for_metrics(conf, console=own is None), "metrics", "Prometheus")]
        if own is not None:
            wanted.append((Listener.for_console(own), "the console", "Console"))
        for listener, name, section in wanted:
            if listener.host and not self._serve(listener, health, name, section):
                self.close()
                return False
        return True

    def _serve(self, listener: Listener, health: HealthCheck, name: str, section: str) -> bool:
        assert self.metrics_dir is not None
        try:
            self.servers.append(StatusServer(listener, self.metrics_dir, health))
        except OSError as exc:
            message = "cannot serve %s on %s:%d (%s.Host/Port): %s; not starting"
            log.error(message, name, listener.host, listener.port, section, exc)
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
        """Stop the HTTP servers that run."""
        while self.servers:
            self.servers.pop().close()
