"""Loads what the audit reads, after the run: history, schedules, the index, Action's counts."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pymysql

from me2_devkit.chaos.data import AuditInput, Bounds, Dispatch, IndexSnapshot, Schedule
from me2_devkit.chaos.injector import FaultWindow
from me2_devkit.chaos.journal import RpcCall
from me2_devkit.chaos.servertime import HISTORY_CLOCK
from me2_devkit.protos import simulator_pb2, simulator_pb2_grpc
from me2_devkit.testing.servers import root_query
from me2_scheduler.config import RedisConf
from me2_scheduler.storage.keys import Keys
from me2_scheduler.storage.redis_conn import make_redis

MAX_STATS_BYTES = 512 * 1024 * 1024  # per-key counts of a long run exceed gRPC's 4 MB default


def naive_utc_epoch(value: datetime | None) -> float | None:
    """A DATETIME read back (UTC wall clock, as the chaos DSN's loc) as epoch seconds;
    None stays None.

    Not ``me2_scheduler.clock.epoch``, which takes an aware datetime and gives an int:
    pymysql hands back naive datetimes, and the audit's times are floats.
    """
    return None if value is None else value.replace(tzinfo=timezone.utc).timestamp()


class MysqlReader:
    """Reads the chaos database as root over loopback."""

    def __init__(self, port: int, database: str) -> None:
        self._port, self._database = port, database

    def query(self, sql: str, *args: object) -> list[tuple]:
        """Rows of one statement; raises ``pymysql.MySQLError``."""
        return root_query(self._port, self._database, sql, args)

    def dispatches(self) -> list[Dispatch]:
        """Every history row, by id."""
        rows = self.query(
            "SELECT h.id, h.avatar_id, h.`trigger`, h.planned_time, h.started_time,"
            " h.finished_time, h.outcome, h.idempotency_key, c.recorded_at"
            f" FROM avatar_schedule_history h LEFT JOIN {HISTORY_CLOCK} c ON c.history_id = h.id"
            " ORDER BY h.id"
        )
        return [
            Dispatch(
                id=i,
                avatar_id=a,
                trigger=t,
                planned=naive_utc_epoch(p),
                started=naive_utc_epoch(s) or 0.0,
                finished=naive_utc_epoch(f) or naive_utc_epoch(s) or 0.0,
                outcome=o,
                key=k,
                recorded=naive_utc_epoch(r),
            )
            for i, a, t, p, s, f, o, k, r in rows
        ]

    def schedules(self) -> dict[int, Schedule]:
        """Every schedule row, by avatar_id."""
        rows = self.query(
            "SELECT avatar_id, status, pause_reason, COALESCE(schedule_count, 0),"
            " COALESCE(failed_count, 0), next_schedule_time FROM avatar_schedules"
        )
        return {
            a: Schedule(a, status, reason, count, failed, int(naive_utc_epoch(due) or 0))
            for a, status, reason, count, failed, due in rows
        }

    def auto_paused_ids(self) -> list[int]:
        """Avatars paused by consecutive failures; [] when MySQL cannot answer."""
        try:
            rows = self.query(
                "SELECT avatar_id FROM avatar_schedules"
                " WHERE status = 'paused' AND pause_reason = 'failures' ORDER BY avatar_id"
            )
        except pymysql.MySQLError:
            return []
        return [avatar_id for (avatar_id,) in rows]


def index_snapshot(conf: RedisConf) -> IndexSnapshot:
    """The due scores and in-flight members (read while nothing else writes)."""
    keys = Keys.from_conf(conf)
    client = make_redis(conf)
    try:
        due = client.zrange(keys.due, 0, -1, withscores=True)
        inflight = client.zrange(keys.inflight, 0, -1)
    finally:
        client.close()
    return IndexSnapshot(
        due={int(member): score for member, score in due},
        inflight=frozenset(int(member) for member in inflight),
    )


def action_stats(address: str) -> simulator_pb2.StatsResponse:
    """The Action simulator's stats (counts per key, peak in flight). Raises grpc.RpcError."""
    options = [("grpc.max_receive_message_length", MAX_STATS_BYTES)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = simulator_pb2_grpc.ControlStub(channel)
        return stub.Stats(simulator_pb2.StatsRequest(), timeout=60)


def action_counts(address: str) -> dict[str, int]:
    """The Action simulator's calls per idempotency key."""
    return dict(action_stats(address).calls_per_key)


def dump(data: AuditInput, path: Path) -> None:
    """Write everything the audit read to ``path`` (JSON), to audit a kept run again."""
    payload = {
        "dispatches": [asdict(row) for row in data.dispatches],
        "schedules": [asdict(row) for row in data.schedules.values()],
        "calls_per_key": data.calls_per_key,
        "journal": [asdict(call) for call in data.journal],
        "windows": [asdict(window) for window in data.windows],
        "index": {"due": data.index.due, "inflight": sorted(data.index.inflight)},
        "bounds": asdict(data.bounds),
        "t_end": data.t_end,
        "arrivals": data.arrivals,
    }
    path.write_text(json.dumps(payload), encoding="utf-8")


def load(path: Path) -> AuditInput:
    """Read back what ``dump`` wrote. Raises OSError, ValueError, KeyError."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return AuditInput(
        dispatches=[Dispatch(**row) for row in raw["dispatches"]],
        schedules={row["avatar_id"]: Schedule(**row) for row in raw["schedules"]},
        calls_per_key=raw["calls_per_key"],
        journal=[RpcCall(**call) for call in raw["journal"]],
        windows=[FaultWindow(**window) for window in raw["windows"]],
        index=IndexSnapshot(
            due={int(k): v for k, v in raw["index"]["due"].items()},
            inflight=frozenset(raw["index"]["inflight"]),
        ),
        bounds=Bounds(**raw["bounds"]),
        t_end=raw["t_end"],
        arrivals=raw.get("arrivals", {}),
    )
