"""Shared helpers for the operator CLI tests: a config file on real servers, rows, runners."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pymysql
from click.testing import CliRunner, Result

from me2_devkit.testing.servers import MariaDBServer, RedisServer
from me2_devkit.testing.stack import cli_argv
from me2_scheduler.cli import cli
from me2_scheduler.config import Config, load_config
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore

CONFIG_TEMPLATE = """\
Name: scheduler.rpc
Mode: test
ListenOn: {listen_on}
Timezone: {timezone}
Mysql:
  DataSource: {data_source}
Redis:
  Host: {redis_host}
  Key: {redis_key}
ActionRpc:
  Endpoints: [127.0.0.1:9]
Schedule:
  SweepGraceSeconds: 30
"""
PROMETHEUS_BLOCK = "Prometheus:\n  Host: {host}\n  Port: {port}\n"
INSERT_CHUNK = 10_000


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


def config_text(
    *,
    data_source: str,
    redis_host: str,
    redis_key: str,
    listen_on: str = "127.0.0.1:8008",
    timezone: str = "UTC",
    prometheus: tuple[str, int] | None = None,
) -> str:
    """A service config in go-zero's shape; ``prometheus`` is (Host, Port) when served."""
    text = CONFIG_TEMPLATE.format(
        listen_on=listen_on, timezone=timezone, data_source=data_source,
        redis_host=redis_host, redis_key=redis_key,
    )  # fmt: skip
    if prometheus is not None:
        text += PROMETHEUS_BLOCK.format(host=prometheus[0], port=prometheus[1])
    return text


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def utc(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


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
        """Another config file for this test's servers; keywords override template values."""
        values: dict[str, Any] = {
            "data_source": self.mariadb.dsn(self.database),
            "redis_host": self.redis_server.address,
            "redis_key": self.redis_key,
        }
        path = self.tmp_path / name
        path.write_text(config_text(**{**values, **overrides}))
        return path

    def sql(self, statement: str, *args: Any) -> list[tuple]:
        return self.mariadb.query(self.database, statement, args)

    def insert_schedules(self, rows: Iterable[tuple[int, str, datetime, str | None]]) -> None:
        """Insert ``(avatar_id, status, next_schedule_time, pause_reason)`` rows in bulk."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        statement = (
            "INSERT INTO avatar_schedules (avatar_id, status, next_schedule_time, pause_reason,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)"
        )
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                batch: list[tuple] = []
                for avatar_id, status, due, reason in rows:
                    naive = due.astimezone(timezone.utc).replace(tzinfo=None)
                    batch.append((avatar_id, status, naive, reason, now, now))
                    if len(batch) >= INSERT_CHUNK:
                        cur.executemany(statement, batch)
                        batch.clear()
                if batch:
                    cur.executemany(statement, batch)
        finally:
            conn.close()

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

    def _connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1", port=self.mariadb.port, user="root", database=self.database,
            autocommit=True,
        )  # fmt: skip


@contextlib.contextmanager
def ops_env(
    tmp_path: Path,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    database: str,
    redis_key: str,
) -> Iterator[OpsEnv]:
    """A migrated database, a Redis key, a config file naming both, a store and an index."""
    config_path = tmp_path / "scheduler.yaml"
    config_path.write_text(
        config_text(
            data_source=mariadb.dsn(database), redis_host=redis_server.address, redis_key=redis_key
        )
    )
    config = load_config(str(config_path))
    apply_migrations(config.mysql)
    env = OpsEnv(
        tmp_path, mariadb, redis_server, database, redis_key, config_path, config,
        MysqlStore(config.mysql), DelayIndex(config.redis),
    )  # fmt: skip
    try:
        yield env
    finally:
        env.index.close()
        env.store.close()
