"""The operator commands' world: a config file on real servers, rows, and ways to run the CLI.

``ops`` is one test's migrated database and Redis key, with a config file
naming both, a store and an index; ``OpsEnv.write_config`` writes more
config files for the same servers with some values changed. ``api`` is the
Scheduler gRPC server in-process on them, for the commands that call it.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from me2_devkit.simulators import RunningSimulator
from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_devkit.testing.stack import cli_argv
from me2_scheduler.cli import cli
from me2_scheduler.clock import epoch
from me2_scheduler.config import Config, RpcClientConf, load_config
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore

from .fixtures_rpc import start_harness, stop_harness
from .support import insert_schedules, service_config, write_config

UNUSED_ACTION = "127.0.0.1:9"  # the commands under test never call Action


def invoke(*args: str) -> Result:
    """Run ``me2-scheduler`` commands in-process; ``result.stdout`` holds stdout only."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``me2-scheduler`` in a subprocess."""
    return subprocess.run(
        cli_argv(*args), capture_output=True, text=True, timeout=timeout_s, check=False
    )


def assert_one_error_line(stderr: str) -> str:
    """The stderr of a failed command is exactly one ``error: ...`` line, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def ops_config(
    *,
    data_source: str,
    redis_host: str,
    redis_key: str,
    listen_on: str = "127.0.0.1:8008",
    timezone: str = "UTC",
    prometheus: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """A service config in go-zero's shape; ``prometheus`` is (Host, Port) when served."""
    settings = service_config(
        data_source=data_source,
        redis_host=redis_host,
        redis_key=redis_key,
        action=UNUSED_ACTION,
        listen_on=listen_on,
        timezone=timezone,
        Schedule={"SweepGraceSeconds": 30},
    )
    if prometheus is not None:
        settings["Prometheus"] = {"Host": prometheus[0], "Port": prometheus[1]}
    return settings


@dataclass
class OpsEnv:
    """One test's config file (real MariaDB database, Redis key) with a store and an index."""

    tmp_path: Path
    mariadb: MariaDBServer
    redis_server: RedisServer
    database: str
    redis_key: str
    config_path: Path
    config: Config
    store: MysqlStore
    index: DelayIndex

    def write_config(self, name: str, **overrides: Any) -> Path:
        """Another config file for this test's servers; keywords override ``ops_config``'s."""
        values: dict[str, Any] = {
            "data_source": self.mariadb.dsn(self.database),
            "redis_host": self.redis_server.address,
            "redis_key": self.redis_key,
        }
        return write_config(self.tmp_path / name, ops_config(**{**values, **overrides}))

    def sql(self, statement: str, *args: Any) -> list[tuple]:
        return self.mariadb.query(self.database, statement, args)

    def insert_schedules(self, rows: Iterable[tuple[int, str, datetime, str | None]]) -> None:
        """Insert ``(avatar_id, status, next_schedule_time, pause_reason)`` rows in bulk."""
        insert_schedules(self.mariadb, self.database, rows)

    def active_due(self) -> dict[int, int]:
        """MySQL's active avatars and their next times (epoch s)."""
        rows = self.sql(
            "SELECT avatar_id, next_schedule_time FROM avatar_schedules WHERE status = 'active'"
        )
        return {a: epoch(due.replace(tzinfo=timezone.utc)) for a, due in rows}

    def due_set(self) -> dict[int, float]:
        client, key = self.index.client, self.index.keys.due
        return {int(m): s for m, s in client.zrange(key, 0, -1, withscores=True)}

    def inflight_set(self) -> set[int]:
        return {int(m) for m in self.index.client.zrange(self.index.keys.inflight, 0, -1)}


@pytest.fixture
def ops(
    tmp_path: Path, mariadb: MariaDBServer, redis_server: RedisServer, database: str, redis_key: str
) -> Iterator[OpsEnv]:
    """A migrated database, a Redis key, a config file naming both, a store and an index."""
    settings = ops_config(
        data_source=mariadb.dsn(database), redis_host=redis_server.address, redis_key=redis_key
    )
    config_path = write_config(tmp_path / "scheduler.yaml", settings)
    config = load_config(str(config_path))
    apply_migrations(config.mysql)
    store, index = MysqlStore(config.mysql), DelayIndex(config.redis)
    env = OpsEnv(
        tmp_path, mariadb, redis_server, database, redis_key, config_path, config, store, index
    )
    try:
        yield env
    finally:
        env.index.close()
        env.store.close()


def schedule_rows(count: int, start: datetime, seed: int = 5) -> list[tuple]:
    """``count`` avatars from id 1: every 10th paused, every 25th disabled, the rest active."""
    rng = random.Random(seed)
    rows = []
    for avatar_id in range(1, count + 1):
        due = start + timedelta(seconds=rng.randrange(7 * 86400))
        if avatar_id % 25 == 0:
            rows.append((avatar_id, "disabled", due, None))
        elif avatar_id % 10 == 0:
            rows.append((avatar_id, "paused", due, "user"))
        else:
            rows.append((avatar_id, "active", due, None))
    return rows


@pytest.fixture
def api(ops: OpsEnv, action_simulator: RunningSimulator) -> Iterator[str]:
    """The Scheduler gRPC server in-process (with an Action simulator); yields its address."""
    config = replace(
        ops.config,
        listen_on="127.0.0.1:0",
        action_rpc=RpcClientConf(endpoints=(action_simulator.address,), timeout_ms=5000),
    )
    harness = start_harness(config)
    try:
        yield f"127.0.0.1:{harness.rpc.port}"
    finally:
        stop_harness(harness)
