"""The console child (role ``console``): its own connections, its app, its Unix socket.

Forked by the supervisor like every other role when ``Console.Enabled``, it
builds what the rpc_server builds (store, index, Action client, dispatcher,
servicer) in this process, after the fork, and serves the app on
``<PROMETHEUS_MULTIPROC_DIR>/console.sock``. The supervisor's HTTP listener
passes it every ``/console/`` request (``console.proxy``), so the
supervisor itself never opens MySQL, Redis or gRPC.

A console that cannot bind its socket exits 1 (restarted with backoff and
shown as down in ``/healthz``), never 3: dispatching goes on without it.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import replace

from me2_scheduler.clients.action import ActionClient
from me2_scheduler.config import Config, MysqlConf
from me2_scheduler.console.actions import Actions
from me2_scheduler.console.app import PREFIX, App
from me2_scheduler.console.auth import Authenticator
from me2_scheduler.console.jobs import IndexJobs
from me2_scheduler.console.pages import Services
from me2_scheduler.console.proxy import socket_path
from me2_scheduler.console.queries import Reads
from me2_scheduler.console.render import Templates
from me2_scheduler.console.web import ConsoleServer
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.rpc_server.servicer import SchedulerServicer
from me2_scheduler.storage.diary_runs import DiaryRunStore
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore
from me2_scheduler.storage.mysql_conn import MysqlPool, zone
from me2_scheduler.supervisor.child import EXIT_FAILURE, EXIT_OK, ChildContext
from me2_scheduler.supervisor.http import MULTIPROC_ENV
from me2_scheduler.timefmt import Display

READS_POOL_SIZE = 4

log = logging.getLogger(__name__)


class Console:
    """Everything one console process holds; ``close`` releases it all."""

    def __init__(self, config: Config) -> None:
        self.store = MysqlStore(config.mysql)
        self.index = DelayIndex(config.redis)
        self.action = ActionClient(config.action_rpc)
        self.diary_runs = DiaryRunStore(config.mysql)
        self.reads_pool = MysqlPool(_reads_conf(config))
        rng = random.Random()
        display = Display(config.timezone)
        dispatcher = Dispatcher(
            config, self.store, self.index, self.action, rng=rng, display=display.format
        )
        self.servicer = SchedulerServicer(config, self.store, self.index, dispatcher, rng=rng)
        self.services = Services(
            config=config,
            reads=Reads(
                self.reads_pool,
                zone(config.mysql.dsn.loc),
                self.index.client,
                self.index.keys,
                config.schedule.sweep_grace_seconds,
            ),
            store=self.store,
            diary_runs=self.diary_runs,
            actions=Actions(self.servicer, config.timeout_ms),
            jobs=IndexJobs(self.store, self.index, on_rebuilt=_count_rebuild),
        )
        self.app = App(self.services, Authenticator(config.console), Templates(display))

    def close(self) -> None:
        """Close every connection this process opened (once the triggers' records are written)."""
        self.servicer.close()
        self.action.close()
        self.index.close()
        self.reads_pool.close()
        self.diary_runs.close()
        self.store.close()


def _reads_conf(config: Config) -> MysqlConf:
    """The reads' own small pool, so a slow action never starves the pages of connections."""
    return replace(config.mysql, pool_size=READS_POOL_SIZE)


def _count_rebuild() -> None:
    from me2_scheduler import metrics

    metrics.INDEX_REBUILDS.inc()


def main(config: Config, ctx: ChildContext) -> int:
    """The console role: serve ``/console/`` on the Unix socket until ``ctx.stop``."""
    metrics_dir = os.environ.get(MULTIPROC_ENV, "")
    if not metrics_dir:
        log.error(
            "console: %s is not set; the console runs only under the supervisor", MULTIPROC_ENV
        )
        return EXIT_FAILURE
    console = Console(config)
    path = socket_path(metrics_dir)
    try:
        server = ConsoleServer(path, console.app.handle, PREFIX)
    except OSError as exc:
        log.error("console cannot listen on %s: %s", path, exc)
        console.close()
        return EXIT_FAILURE
    thread = threading.Thread(target=server.serve_forever, name="console-http", daemon=True)
    thread.start()
    where = f"{config.prometheus.host}:{config.prometheus.port}"
    log.info("console serving %s/ on the supervisor's listener %s", PREFIX, where)
    try:
        ctx.stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        console.close()
    log.info("console stopped")
    return EXIT_OK
