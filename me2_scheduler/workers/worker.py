"""The worker role: dispatches the claimed avatars it pops from ``ready`` (the seed's TaskExecutor).

Each worker process runs ``main``: it pops a batch of claims and hands it to
a ``dispatch.Dispatcher``, which checks, calls Action with up to the
worker's share of ``Schedule.MaxInFlight`` in flight, records and settles
them. A batch is up to ``Schedule.DispatchBatch`` claims (at least the
share) while Action answers fast, and only what the worker can start at once
while it is slow (``InFlight.pop_size``): claims a busy worker cannot call
yet stay in ``ready`` for an idle one.
"""

from __future__ import annotations

import logging

from me2_scheduler import metrics
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.config import Config
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.errors import RedisIndexError, StoreError
from me2_scheduler.inflight import share_of
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import leased_store
from me2_scheduler.supervisor.child import ChildContext
from me2_scheduler.timefmt import Display

log = logging.getLogger("me2_scheduler.worker")


def main(config: Config, ctx: ChildContext) -> int:
    """Worker process: pop batches of claims until told to stop; a dispatch in hand is
    finished first, and the rest of its batch goes back to ``ready``."""
    schedule = config.schedule
    share = share_of(schedule.max_in_flight, schedule.max_workers, ctx.index)
    dispatcher = make_dispatcher(config, max_in_flight=share)
    while not ctx.stopping:
        try:
            batch = dispatcher.pop_size(schedule.dispatch_batch)
            popped = dispatcher.index.pop_ready_many(batch, timeout_s=1.0)
            if popped.malformed:
                metrics.ERRORS.labels(role="worker", kind="MalformedClaim").inc(popped.malformed)
            if popped.claims:
                dispatcher.dispatch_batch(popped.claims, stopping=lambda: ctx.stopping)
        except (StoreError, RedisIndexError) as exc:
            # The leases bring the claims back; pause so a down server is not hammered.
            log.error("[TaskExecutor] dispatch interrupted: %s", exc)
            metrics.ERRORS.labels(role="worker", kind=type(exc).__name__).inc()
            ctx.wait(1.0)
    return 0


def make_dispatcher(config: Config, max_in_flight: int = 1) -> Dispatcher:
    """A Dispatcher with its own connections (call in the process that uses it)."""
    return Dispatcher(
        config,
        leased_store(config.mysql, config.schedule.lease_seconds),
        DelayIndex(config.redis),
        ActionClient(config.action_rpc),
        display=Display(config.timezone).format,
        max_in_flight=max_in_flight,
    )
