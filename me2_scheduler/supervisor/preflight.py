"""Checks run before any child starts, in a short-lived child of their own.

The supervisor forks this so that no MySQL or Redis object ever exists in the
parent (DESIGN §1). Exit codes: 0 go on, 1 a server is unreachable or the
schema is behind (the operator must act), 2 config.
"""

from __future__ import annotations

import logging

from me2_scheduler.config import Config
from me2_scheduler.errors import SchedulerError

log = logging.getLogger("me2_scheduler.preflight")


def preflight(config: Config) -> int:
    """Check MySQL, the schema and Redis; rebuild the index when its ``meta`` is gone."""
    from me2_scheduler.storage.index import DelayIndex
    from me2_scheduler.storage.migrations import pending_migrations
    from me2_scheduler.storage.mysql import MysqlStore
    from me2_scheduler.workers.poller import rebuild_index

    store = MysqlStore(config.mysql)
    index = DelayIndex(config.redis)
    try:
        store.ping()
        pending = pending_migrations(config.mysql)
        if pending:
            log.error(
                "database schema is behind (missing %s): run `me2-scheduler init-db -f <config>`",
                ", ".join(pending),
            )
            return 1
        index.ping()
        if not index.has_meta():
            log.info("index meta missing: rebuilding the Redis index from MySQL")
            rebuild_index(store, index)
    except SchedulerError as exc:
        log.error("cannot start: %s", exc)
        return 1
    finally:
        store.close()
    return 0
