"""``make demo``: the service for real, with a live summary every 2 seconds.

Starts MariaDB and Redis under ``.run/demo`` on free loopback ports, the Action
simulator (10 % failures, a few avatars that always fail) and the Diary
simulator, applies the migrations, runs ``me2-scheduler run`` on
``etc/scheduler-demo.yaml`` plus the console (``demo_config``), enables 200
avatars through the gRPC API, prints the console's URL and credentials, then
prints what happens. Ctrl-C (or ``--duration N``) stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pymysql

from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_devkit.testing.stack import Service, Simulator, cli_argv
from me2_scheduler.protos import scheduler_pb2, scheduler_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run" / "demo"
AVATARS = 200
ALWAYS_FAILING = (7, 42, 99)
CONSOLE_USER = "demo"
CONSOLE_SECTION = f"""
# Added by scripts/demo.py: the operators' console under /console/ on the metrics port.
Console:
  Enabled: true
  User: {CONSOLE_USER}
  Password: ${{DEMO_CONSOLE_PASSWORD}}
"""


class Stop(Exception):
    """Raised from the SIGINT/SIGTERM handler to leave the main loop."""


def _on_signal(signum: int, frame: object) -> None:
    raise Stop


def demo_config() -> Path:
    """``etc/scheduler-demo.yaml`` with the operators' console turned on, under ``.run/demo``.

    The console needs a password (there is no default), so the file in ``etc``
    leaves it off and loads anywhere; this run's copy adds it, the password
    taken from the environment as any deployment would.
    """
    path = RUN / "scheduler-demo.yaml"
    text = (ROOT / "etc" / "scheduler-demo.yaml").read_text(encoding="utf-8")
    path.write_text(text + CONSOLE_SECTION, encoding="utf-8")
    return path


def start_stack() -> tuple[list, Service, dict[str, str]]:
    """Start servers, simulators and the service; return what must be stopped."""
    shutil.rmtree(RUN, ignore_errors=True)
    started: list = []
    mariadb = MariaDBServer(root=RUN / "mariadb").start()
    started.append(mariadb)
    mariadb.create_database("me2")
    redis = RedisServer(root=RUN / "redis").start()
    started.append(redis)
    failing = ",".join(map(str, ALWAYS_FAILING))
    action = Simulator(
        "action", RUN, ("--latency-ms", "20", "--fail-rate", "0.1", "--fail-avatars", failing)
    ).start()
    started.append(action)
    diary = Simulator("diary", RUN, ("--latency-ms", "5", "--fail-rate", "0.05")).start()
    started.append(diary)
    env = {
        "DEMO_MYSQL_PORT": str(mariadb.port),
        "DEMO_REDIS_PORT": str(redis.port),
        "DEMO_ACTION_PORT": str(action.port),
        "DEMO_DIARY_PORT": str(diary.port),
        "DEMO_RPC_PORT": str(free_port()),
        "DEMO_METRICS_PORT": str(free_port()),
        "DEMO_CONSOLE_PASSWORD": secrets.token_urlsafe(12),  # a new one every run
    }
    config = demo_config()
    subprocess.run(cli_argv("init-db", "-f", str(config)), env={**os.environ, **env}, check=True)
    service = Service(config, RUN, env=env).start()
    started.append(service)
    service.wait_ready()
    return started, service, env


def enable_avatars(rpc_port: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{rpc_port}") as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for avatar_id in range(1, AVATARS + 1):
            request = scheduler_pb2.EnableAvatarScheduleRequest(avatar_id=avatar_id)
            reply = stub.EnableAvatarSchedule(request, timeout=5)
            if reply.code != 0:
                raise SystemExit(f"enable {avatar_id}: {reply.code} {reply.message}")
        # Trigger the always-failing avatars now, so that their retries (every
        # RetryDelaySeconds) reach the auto-pause within the first minute.
        for avatar_id in ALWAYS_FAILING:
            request = scheduler_pb2.TriggerScheduleRequest(avatar_id=avatar_id)
            stub.TriggerSchedule(request, timeout=5)
    print(f"enabled {AVATARS} avatars; avatars {ALWAYS_FAILING} always fail", flush=True)


def summary(conn: pymysql.connections.Connection) -> str:
    """One line: dispatched, success rate, lag p50/p99, statuses, auto-paused, next due, diary."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*), COALESCE(SUM(outcome='success'),0) FROM avatar_schedule_history"
        )
        total, ok = cur.fetchone()
        cur.execute(
            "SELECT lag_ms FROM avatar_schedule_history WHERE lag_ms IS NOT NULL "
            "ORDER BY id DESC LIMIT 2000"
        )
        lags = sorted(row[0] for row in cur.fetchall())
        cur.execute("SELECT status, COUNT(*) FROM avatar_schedules GROUP BY status")
        by_status = dict(cur.fetchall())
        cur.execute("SELECT COUNT(*) FROM avatar_schedules WHERE pause_reason='failures'")
        (auto_paused,) = cur.fetchone()
        cur.execute("SELECT MIN(next_schedule_time) FROM avatar_schedules WHERE status='active'")
        (next_due,) = cur.fetchone()
        diary = _diary_summary(cur)
    conn.commit()
    rate = f"{100 * ok / total:.1f}%" if total else "-"
    return (
        f"dispatched {total:5d}  success {rate:>6}  lag p50 {_pct(lags, 50)} "
        f"p99 {_pct(lags, 99)}  active {by_status.get('active', 0)} "
        f"paused {by_status.get('paused', 0)} disabled {by_status.get('disabled', 0)}  "
        f"auto-paused {auto_paused}  next due {next_due or '-'}  "
        f"{diary}"
    )


def _diary_summary(cur: pymysql.cursors.Cursor) -> str:
    """``diary runs 3 (last 18:04 done 190 ok/10 failed)``: one run per cron fire time."""
    cur.execute("SELECT COUNT(*) FROM diary_runs")
    (runs,) = cur.fetchone()
    cur.execute(
        "SELECT fire_time, status, success_count, failure_count FROM diary_runs"
        " ORDER BY fire_time DESC LIMIT 1"
    )
    last = cur.fetchone()
    if last is None:
        return "diary runs 0"
    fire_time, status, ok, failed = last
    return f"diary runs {runs} (last {fire_time:%H:%M} {status} {ok} ok/{failed} failed)"


def _pct(values: list[int], pct: int) -> str:
    if not values:
        return "    -"
    return f"{values[min(len(values) - 1, len(values) * pct // 100)]:4d}ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    started: list = []
    try:
        started, service, env = start_stack()
        enable_avatars(env["DEMO_RPC_PORT"])
        conn = pymysql.connect(
            host="127.0.0.1", port=int(env["DEMO_MYSQL_PORT"]), user="root", database="me2"
        )
        print(f"service log: {service.process.log_path}", flush=True)
        print(f"metrics: http://127.0.0.1:{env['DEMO_METRICS_PORT']}/metrics", flush=True)
        print(
            f"console: http://127.0.0.1:{env['DEMO_METRICS_PORT']}/console/"
            f"  user {CONSOLE_USER}  password {env['DEMO_CONSOLE_PASSWORD']}",
            flush=True,
        )
        deadline = time.monotonic() + args.duration if args.duration else float("inf")
        while time.monotonic() < deadline:
            time.sleep(2)
            print(summary(conn), flush=True)
    except Stop:
        print("stopping…", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for thing in reversed(started):
            thing.stop()
    print("demo stopped; no process left running", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
