"""Checks run before any child starts, in a short-lived child of their own.

The supervisor forks this so that no MySQL or Redis object ever exists in the
parent (DESIGN §1). Exit codes: 0 go on, 1 a server is unreachable or the
schema is behind (the operator must act), 2 config (a Redis that evicts keys
counts as one: the service cannot run correctly on it).

Why a Redis with an ``allkeys-*`` eviction policy is refused, where BullMQ
only warns: the index is rebuilt from MySQL, but only when ``meta`` is gone
or, for an overdue avatar, by the sweep; between the two an evicted key
fails silently. An evicted ``due`` entry is a dispatch missed until the next
sweep, an evicted ``meta`` a full rebuild at every eviction, and an evicted
lease or ``inflight`` entry lets the sweep put an avatar in flight back in
``due``, so the same slot is dispatched twice (DESIGN §2.3, invariant 2).
``volatile-*`` policies evict only keys with a TTL; the index's keys have
none (only a rebuild's temporary set does), so these only warn.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from me2_scheduler.config import Config
from me2_scheduler.errors import ConfigError, SchedulerError

if TYPE_CHECKING:
    from me2_scheduler.storage.redis_conn import RedisClient

log = logging.getLogger("me2_scheduler.preflight")

EXIT_CONFIG = 2
SAFE_POLICY = "noeviction"


def preflight(config: Config) -> int:
    """Check MySQL, the schema and Redis; rebuild the index when its ``meta`` is gone."""
    from me2_scheduler.storage.index import DelayIndex
    from me2_scheduler.storage.migrations import check_schema
    from me2_scheduler.storage.mysql import MysqlStore
    from me2_scheduler.workers.poller import rebuild_index

    store = MysqlStore(config.mysql)
    index = DelayIndex(config.redis)
    try:
        store.ping()
        check_schema(store)
        index.ping()
        check_eviction_policy(index.client)
        if not index.has_meta():
            log.info("index meta missing: rebuilding the Redis index from MySQL")
            rebuild_index(store, index)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return EXIT_CONFIG
    except SchedulerError as exc:
        log.error("cannot start: %s", exc)
        return 1
    finally:
        store.close()
        index.close()
    return 0


def check_eviction_policy(client: RedisClient) -> None:
    """Refuse a Redis that may evict the index's keys; warn when it is only unclear.

    Raises ``ConfigError("Redis.Host", ...)`` for an ``allkeys-*`` policy (see
    the module doc), and ``RedisIndexError`` when Redis cannot be asked.
    """
    from me2_scheduler.storage.redis_conn import eviction_policies
    from me2_scheduler.storage.scripts import redis_errors

    with redis_errors("reading maxmemory-policy"):
        policies = eviction_policies(client)
    for address, policy in policies.items():
        if policy is None:
            log.warning(
                "Redis %s does not tell its maxmemory-policy (CONFIG and INFO refused):"
                " make sure it is %s, or evicted keys will go unnoticed",
                address,
                SAFE_POLICY,
            )
        elif policy.startswith("allkeys-"):
            raise ConfigError(
                "Redis.Host",
                f"{address} has maxmemory-policy {policy}, which may evict the delay index"
                " (a lost lease or due entry is a repeated or missed dispatch); set"
                f" maxmemory-policy {SAFE_POLICY} on it, or use a Redis that has it",
            )
        elif policy != SAFE_POLICY:
            log.warning(
                "Redis %s has maxmemory-policy %s: the index's keys have no TTL and are not"
                " evicted, but a rebuild's temporary set may be; %s is advised",
                address,
                policy,
                SAFE_POLICY,
            )
