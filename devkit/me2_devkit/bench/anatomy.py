"""The anatomy of a dispatch: what each step costs in CPU, here and in the servers.

The worker's steps are run one kind at a time, back to back, in this process
(one caller, nothing else of the service running), over batches of
``Schedule.DispatchBatch`` claims as a worker takes them: pop the claims,
read their rows, renew their leases, call Action for each, record the
outcomes, ack in Redis; then whole batches (``Dispatcher.dispatch_batch``), whose
excess over the sum of the steps is logging, metrics and glue. For each
step, per dispatch: this process's CPU (the worker's share), the CPU
MariaDB, Redis and the simulator spent, and the wall time. Their sum is what
the cores must pay for one dispatch, so ``cores / sum`` bounds the
dispatches/s of the whole box.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import redis

from me2_devkit.bench.env import Servers, Stage, staged
from me2_devkit.bench.probe import cpu_seconds
from me2_devkit.bench.seed import insert_schedules, rebuild_index
from me2_devkit.simulators import SimulatorControl
from me2_scheduler import policy
from me2_scheduler.clients.action import ActionClient
from me2_scheduler.clock import from_epoch, utc_now
from me2_scheduler.dispatch import Dispatcher
from me2_scheduler.policy import Success
from me2_scheduler.states import Trigger
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore

LEASE_S = 600
WARM_UP = 50
STEPS = ("pop", "read_row", "renew_lease", "action", "record", "ack")


def _servers_cpu(servers: Servers) -> dict[str, float]:
    pids = {
        "mariadb": servers.mariadb.pid or 0,
        "redis": servers.redis.pid or 0,
        "simulator": servers.action.process.pid if servers.action.process else 0,
    }
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


# What the worker sends Redis: scripts and list pops (the commands a script runs
# inside Redis are counted by Redis too, so only these are round trips).
REDIS_CLIENT_COMMANDS = ("evalsha", "eval", "blpop", "lpop")


def _round_trips(servers: Servers) -> dict[str, int]:
    """Round trips each server has answered so far: MariaDB statements + pings (admin
    commands), and the worker's kind of Redis commands.

    Unlike CPU time these do not depend on what else the box is doing.
    """
    conn = servers.mysql()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS"
                " WHERE VARIABLE_NAME IN ('QUESTIONS', 'COM_ADMIN_COMMANDS')"
            )
            (mysql,) = cur.fetchone()
    finally:
        conn.close()
    client = redis.Redis(host="127.0.0.1", port=servers.redis.port)
    try:
        stats = client.info("commandstats")
        commands = sum(
            stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in REDIS_CLIENT_COMMANDS
        )
    finally:
        client.close()
    return {"mysql_calls": int(mysql), "redis_calls": int(commands)}


def _measure(
    servers: Servers, batches: int, size: int, step: Callable[[int], Any]
) -> dict[str, float]:
    """Run ``step(i)`` for each of ``batches`` batches of ``size`` dispatches; per
    dispatch: CPU ms here and in each server, wall ms, and the MariaDB and Redis
    commands it took."""
    probe = _round_trips(servers)
    calls0 = _round_trips(servers)  # the probes' own commands: calls0 - probe per probe
    before, cpu0, wall0 = _servers_cpu(servers), time.process_time(), time.perf_counter()
    for i in range(batches):
        step(i)
    cpu1, wall1, after = time.process_time(), time.perf_counter(), _servers_cpu(servers)
    calls1 = _round_trips(servers)
    count = batches * size
    per = 1000 / count
    spent = {"worker": (cpu1 - cpu0) * per, "wall": (wall1 - wall0) * per}
    spent.update({name: (after[name] - before[name]) * per for name in after})
    spent.update(
        {name: round((calls1[name] - 2 * calls0[name] + probe[name]) / count, 2) for name in calls1}
    )
    return spent


class _Steps:
    """The worker's steps, one method each, over the i-th of the batches popped so far."""

    def __init__(
        self, store: MysqlStore, index: DelayIndex, action: ActionClient, size: int
    ) -> None:
        self.store, self.index, self.action_client, self.size = store, index, action, size
        self.rng = random.Random(8)
        self.claims: list[list[Claim]] = []
        self.rows: list[list[Any]] = []
        self.results: list[list[Any]] = []

    def pop(self, i: int) -> None:
        self.claims.append(_pop(self.index, self.size))

    def read_row(self, i: int) -> None:
        self.rows.append(self.store.batch_get([c.avatar_id for c in self.claims[i]]))

    def renew_lease(self, i: int) -> None:
        self.index.renew_leases(self.claims[i], LEASE_S)

    def action(self, i: int) -> None:
        call = self.action_client.schedule_action
        self.results.append(
            [call(c.avatar_id, c.idempotency_key, Trigger.AUTO) for c in self.claims[i]]
        )

    def record(self, i: int) -> None:
        now = utc_now()
        done = zip(self.claims[i], self.rows[i], self.results[i], strict=True)
        attempts = [
            Success(
                avatar_id=claim.avatar_id,
                expected_version=row.version,
                trigger=Trigger.AUTO,
                planned_at=from_epoch(claim.planned_at),
                started_at=now,
                finished_at=now,
                idempotency_key=claim.idempotency_key,
                action_type=result.action_type,
                action_id=result.action_id,
                next_time=policy.next_due(now, 2, 6, self.rng),
            )
            for claim, row, result in done
        ]
        self.rows[i] = [recorded.row for recorded in self.store.record_many(attempts)]

    def ack(self, i: int) -> None:
        rows = zip(self.claims[i], self.rows[i], strict=True)
        self.index.ack_many([(claim, row.due_epoch) for claim, row in rows])


def _seeded(stage: Stage, count: int) -> None:
    planned = int(time.time()) - 10
    with stage.mysql() as conn:
        insert_schedules(conn, ((i, planned) for i in range(1, count + 1)))
    rebuild_index(stage)
    stage.index.claim_due(count, LEASE_S)


def anatomy(servers: Servers, count: int) -> dict[str, float]:
    """CPU ms per dispatch of each step and of whole batches; see the module docstring.

    Raises StoreError, RedisIndexError, DownstreamError.
    """
    with SimulatorControl(servers.action.address) as control:
        control.reset()
        control.configure(latency_ms=0, fail_rate=0.0)
    figures: dict[str, float] = {}
    with staged(servers, "anatomy") as stage:
        size = stage.config.schedule.dispatch_batch
        batches = max(1, count // size)
        _seeded(stage, 2 * batches * size + WARM_UP)
        store, index = MysqlStore(stage.config.mysql), DelayIndex(stage.config.redis)
        action = ActionClient(stage.config.action_rpc)
        try:
            dispatcher = Dispatcher(stage.config, store, index, action)
            for _ in range(WARM_UP):  # connections opened, scripts loaded, channel up
                dispatcher.dispatch_batch(_pop(index, 1))
            steps = _Steps(store, index, action, size)
            for name in STEPS:
                measured = _measure(servers, batches, size, getattr(steps, name))
                for part, value in measured.items():
                    figures[f"anatomy.{name}.{part}"] = value
            whole = _measure(
                servers, batches, size, lambda i: dispatcher.dispatch_batch(_pop(index, size))
            )
            figures["anatomy.batch_size"] = size
        finally:
            action.close()
            index.close()
            store.close()
        for part, value in whole.items():
            figures[f"anatomy.dispatch.{part}"] = value
    return figures


def _pop(index: DelayIndex, size: int) -> list[Claim]:
    claims = index.pop_ready_many(size, timeout_s=0).claims
    if len(claims) < size:
        raise RuntimeError("fewer claims than the anatomy needs")
    return claims
