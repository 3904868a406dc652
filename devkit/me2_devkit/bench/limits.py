"""What the box gives each part alone: the limits the headline figures are read against.

- gRPC: unary ``ScheduleAction`` calls/s to the Action simulator from
  ``processes`` processes (each a plain stub in a loop, unique keys);
- MariaDB: transactions/s from ``processes`` connections, each the shape of a
  dispatch record (UPDATE the schedule row, INSERT a history row, COMMIT), on
  distinct avatars as the workers have;
- Redis: avatars/s moved by back-to-back ``claim_due`` calls of 500.

The load processes are fresh interpreters (``python -m`` this module; never
forked from this one, which holds gRPC and Redis clients) and all count over
the same wall-clock window.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

from me2_devkit.bench.env import Servers, Stage, delete_keys, staged
from me2_devkit.bench.seed import insert_schedules
from me2_scheduler.clock import utc_now
from me2_scheduler.states import Trigger

GO_DELAY_S = 0.2  # from "all ready" to the window's start
MYSQL_ROWS_PER_PROCESS = 2000
REDIS_CLAIM_MEMBERS = 200_000
CLAIM_BATCH = 500

Window = Callable[[], float]
"""Called by a load process once connected: blocks until the window opens, returns its end."""


def _window_from_parent() -> float:
    """Say "ready" on stdout, read ``"<start> <stop>"`` from stdin, sleep until start."""
    print("ready", flush=True)
    start_at, stop_at = (float(x) for x in sys.stdin.readline().split())
    while (left := start_at - time.time()) > 0:
        time.sleep(min(left, 0.05))
    return stop_at


def grpc_caller(address: str, worker: int, window: Window) -> int:
    """Call ScheduleAction back to back over the window; return how many answered."""
    import grpc

    from me2_scheduler.protos import action_pb2, action_pb2_grpc

    channel = grpc.insecure_channel(address)
    stub = action_pb2_grpc.ActionStub(channel)
    request = action_pb2.ScheduleActionRequest(
        avatar_id=worker, idempotency_key="", trigger=Trigger.AUTO
    )
    stub.ScheduleAction(request, timeout=10)  # connect before the window opens
    stop_at = window()
    calls = 0
    while time.time() < stop_at:
        request = action_pb2.ScheduleActionRequest(
            avatar_id=worker, idempotency_key=f"limit:{worker}:{calls}", trigger=Trigger.AUTO
        )
        stub.ScheduleAction(request, timeout=10)
        calls += 1
    channel.close()
    return calls


def _record_sql(avatar_id: int, n: int, now: datetime) -> tuple[tuple, tuple]:
    update = (
        "UPDATE avatar_schedules SET schedule_count = schedule_count + 1,"
        " last_schedule_time = %s, last_action_type = %s, failed_count = 0, last_error = NULL,"
        " version = version + 1, updated_at = %s, next_schedule_time = %s WHERE avatar_id = %s",
        (now, "post", now, now, avatar_id),
    )
    insert = (
        "INSERT INTO avatar_schedule_history (avatar_id, `trigger`, planned_time, started_time,"
        " finished_time, outcome, action_type, action_id, lag_ms, idempotency_key)"
        " VALUES (%s, 'auto', %s, %s, %s, 'success', 'post', %s, 0, %s)",
        (avatar_id, now, now, now, n, f"{avatar_id}:{n}"),
    )
    return update, insert


def mysql_writer(port: int, database: str, worker: int, window: Window) -> int:
    """Commit dispatch-shaped transactions over the window; return how many."""
    import pymysql

    conn = pymysql.connect(
        host="127.0.0.1", port=port, user="root", database=database, autocommit=False
    )
    first = worker * MYSQL_ROWS_PER_PROCESS + 1
    stop_at = window()
    done = 0
    with conn.cursor() as cur:
        while time.time() < stop_at:
            now = utc_now().replace(tzinfo=None, microsecond=0)
            avatar_id = first + done % MYSQL_ROWS_PER_PROCESS
            for sql, args in _record_sql(avatar_id, done, now):
                cur.execute(sql, args)
            conn.commit()
            done += 1
    conn.close()
    return done


def _spawned(kind: str, arg_rows: list[tuple], seconds: float) -> float:
    """Run ``kind``'s load in one process per row over one shared window; sum / seconds.

    The window opens once every process has connected and said so. Raises
    RuntimeError when a load process fails.
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", __name__, kind, json.dumps(list(args))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in arg_rows
    ]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{kind} load process failed: {proc.stderr.read()[-500:]}")
        start_at = time.time() + GO_DELAY_S
        for proc in procs:
            proc.stdin.write(f"{start_at} {start_at + seconds}\n")
            proc.stdin.flush()
        return sum(_count(kind, proc, seconds) for proc in procs) / seconds
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _count(kind: str, proc: subprocess.Popen, seconds: float) -> int:
    out, err = proc.communicate(timeout=GO_DELAY_S + seconds + 120)
    if proc.returncode != 0 or not out.strip().isdigit():
        raise RuntimeError(f"{kind} load process failed: {err[-500:]}")
    return int(out)


def grpc_limit(servers: Servers, processes: int, seconds: float) -> float:
    """Unary calls/s the Action simulator answers to ``processes`` callers."""
    from me2_devkit.simulators import SimulatorControl

    with SimulatorControl(servers.action.address) as control:
        control.reset()
        control.configure(latency_ms=0, fail_rate=0.0)
    address = servers.action.address
    rate = _spawned("grpc", [(address, i) for i in range(processes)], seconds)
    with SimulatorControl(servers.action.address) as control:
        control.reset()  # drop the remembered answers
    return rate


def mysql_limit(stage: Stage, processes: int, seconds: float) -> float:
    """Dispatch-shaped transactions/s from ``processes`` connections."""
    count = processes * MYSQL_ROWS_PER_PROCESS
    with stage.mysql() as conn:
        insert_schedules(conn, ((i, int(time.time())) for i in range(1, count + 1)))
    port = stage.servers.mariadb.port
    rows = [(port, stage.database, i) for i in range(processes)]
    return _spawned("mysql", rows, seconds)


def redis_claim_limit(stage: Stage, seconds: float) -> float:
    """Avatars/s moved from due to ready by back-to-back claims of ``CLAIM_BATCH``."""
    index = stage.index
    due_at = int(time.time()) - 60
    index.put_due_many((i, due_at) for i in range(1, REDIS_CLAIM_MEMBERS + 1))
    claimed, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        got = index.claim_due(CLAIM_BATCH, 30)
        if got == 0:
            break
        claimed += got
    rate = claimed / (time.perf_counter() - began)
    delete_keys(index)
    return rate


def limits(servers: Servers, processes: int, seconds: float) -> dict[str, float]:
    """All three limits; raises StoreError, RedisIndexError, grpc.RpcError."""
    figures = {"limits.grpc_calls": grpc_limit(servers, processes, seconds)}
    with staged(servers, "limits") as stage:
        figures["limits.mysql_txns"] = mysql_limit(stage, processes, seconds)
        figures["limits.redis_claims"] = redis_claim_limit(stage, seconds)
    return figures


LOADS = {"grpc": grpc_caller, "mysql": mysql_writer}

if __name__ == "__main__":  # one load process: ``python -m ... <kind> <json args>``
    print(LOADS[sys.argv[1]](*json.loads(sys.argv[2]), _window_from_parent))
