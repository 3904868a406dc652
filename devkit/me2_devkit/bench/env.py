"""The benchmark's world: its own servers, one fresh database and Redis key per stage.

``Servers`` are MariaDB, Redis and the Action simulator on free ports, started
here (or handed in by a test) and stopped by PID. A ``Stage`` is one
measurement's database, ``Redis.Key`` and service config, so no run sees
another's rows; ``Stage.start_service`` runs the real ``me2-scheduler run``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pymysql

from me2_devkit.testing.configs import service_config, write_config
from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port, temp_root
from me2_devkit.testing.stack import Service, Simulator
from me2_scheduler.config import Config, load_config
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.storage.mysql import MysqlStore

SERVICE_READY_S = 120.0  # a loaded 2-core box may take a while to fork twelve children

_stage_seq = itertools.count(1)


@dataclass
class Servers:
    """MariaDB, Redis and the Action simulator the benchmark runs against."""

    root: Path
    mariadb: MariaDBServer
    redis: RedisServer
    action: Simulator
    owned: tuple[Any, ...] = ()  # what ``stop`` stops: only what this object started

    @classmethod
    def start(cls, root: Path | None = None) -> Servers:
        """Start all three on free ports under ``root`` (a temp dir by default).

        Raises ServerStartError.
        """
        root = root or temp_root("me2-bench-")
        mariadb = MariaDBServer(root=root / "mariadb", durable=True).start()
        redis_server = RedisServer(root=root / "redis").start()
        return cls.around(root, mariadb, redis_server, owned=(mariadb, redis_server))

    @classmethod
    def around(
        cls,
        root: Path,
        mariadb: MariaDBServer,
        redis_server: RedisServer,
        owned: tuple[Any, ...] = (),
    ) -> Servers:
        """Use running MariaDB and Redis (a test's); start only the Action simulator."""
        action = Simulator("action", root).start()
        return cls(root, mariadb, redis_server, action, (*owned, action))

    def stop(self) -> None:
        """Stop what ``start``/``around`` started, simulator first."""
        for server in reversed(self.owned):
            with contextlib.suppress(Exception):
                server.stop()

    def mysql(self, database: str | None = None, **extra: Any) -> pymysql.Connection:
        """A root connection (autocommit) to ``database``."""
        return pymysql.connect(
            host="127.0.0.1",
            port=self.mariadb.port,
            user="root",
            database=database,
            autocommit=True,
            init_command="SET time_zone = '+00:00'",  # UNIX_TIMESTAMP of UTC DATETIMEs
            **extra,
        )


@dataclass
class Stage:
    """One measurement's database, Redis key and service config."""

    servers: Servers
    name: str
    database: str
    redis_key: str
    config_path: Path
    config: Config
    service: Service | None = None
    _store: MysqlStore | None = field(default=None, repr=False)
    _index: DelayIndex | None = field(default=None, repr=False)

    @property
    def store(self) -> MysqlStore:
        if self._store is None:
            self._store = MysqlStore(self.config.mysql)
        return self._store

    @property
    def index(self) -> DelayIndex:
        if self._index is None:
            self._index = DelayIndex(self.config.redis)
        return self._index

    def mysql(self) -> pymysql.Connection:
        """A fresh autocommit connection to this stage's database."""
        return self.servers.mysql(self.database)

    def start_service(self) -> Service:
        """Run ``me2-scheduler run`` on this stage's config; wait until it serves.

        Raises ServerStartError when it does not come up.
        """
        self.service = Service(self.config_path, self.config_path.parent).start(self.name)
        self.service.wait_ready(SERVICE_READY_S)
        return self.service

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def close(self, *, drop: bool = True) -> None:
        """Stop the service, close connections, drop the database and the Redis keys."""
        self.stop_service()
        if self._index is not None:
            with contextlib.suppress(Exception):
                delete_keys(self._index)
            self._index.close()
        if self._store is not None:
            self._store.close()
        if drop:
            self.servers.mariadb.drop_database(self.database)


def delete_keys(index: DelayIndex) -> None:
    """Delete every key of ``index``'s ``Redis.Key`` (rebuild leftovers too)."""
    client = index.client
    pattern = index.keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    for key in list(client.scan_iter(match=pattern, count=1000)):
        client.unlink(key)


def make_stage(servers: Servers, name: str, schedule: dict[str, Any] | None = None) -> Stage:
    """A fresh database (migrated) and Redis key, with a config whose ``Schedule`` is ``schedule``.

    Keys left out of ``schedule`` keep the service defaults. Raises StoreError
    or ConfigError.
    """
    seq = next(_stage_seq)
    database = f"bench_{os.getpid()}_{seq}"
    redis_key = f"bench:{os.getpid()}:{seq}"
    servers.mariadb.create_database(database)
    folder = servers.root / f"{seq:02d}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    config_path = write_config(
        folder / "scheduler.yaml", stage_config(servers, database, redis_key, schedule)
    )
    config = load_config(str(config_path))
    apply_migrations(config.mysql)
    return Stage(servers, name, database, redis_key, config_path, config)


def stage_config(
    servers: Servers, database: str, redis_key: str, schedule: dict[str, Any] | None
) -> dict[str, Any]:
    """The service's settings for a stage: production mode, own ports, the given ``Schedule``."""
    action = servers.action.address
    return service_config(
        data_source=servers.mariadb.dsn(database),
        redis_host=servers.redis.address,
        redis_key=redis_key,
        action=action,
        listen_on=f"127.0.0.1:{free_port()}",
        mode="pro",
        ActionRpc={"Endpoints": [action], "Timeout": 2000},
        DiaryRpc={"Endpoints": [action]},
        Schedule=schedule or {"MaxWorkers": 10},
        DiarySchedule={"CronExpression": "0 3 1 1 *"},
        Prometheus={"Host": "127.0.0.1", "Port": free_port()},
        Log={"Encoding": "plain", "Level": "info"},
    )


@contextlib.contextmanager
def staged(servers: Servers, name: str, schedule: dict[str, Any] | None = None) -> Iterator[Stage]:
    """``make_stage`` as a context that always cleans up."""
    stage = make_stage(servers, name, schedule)
    try:
        yield stage
    finally:
        stage.close()


# -- what the report says about the box --------------------------------------------


def machine() -> dict[str, str]:
    """Cores, CPU model and memory of this host (Linux /proc)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cores": str(os.cpu_count() or 0),
        "cpu": model,
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
    }


def versions(servers: Servers) -> dict[str, str]:
    """Versions of Python, MariaDB, Redis, grpcio, redis-py and PyMySQL in this run."""
    import redis

    conn = servers.mysql()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            (mariadb,) = cur.fetchone()
    finally:
        conn.close()
    client = redis.Redis(host="127.0.0.1", port=servers.redis.port)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    found = {
        "Python": platform.python_version(),
        "MariaDB": str(mariadb),
        "Redis": str(redis_version),
    }
    for package in ("grpcio", "protobuf", "redis", "PyMySQL", "Jinja2", "hiredis", "py-spy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def box_busy_seconds() -> float:
    """CPU seconds every process on this box has used since boot (/proc/stat, all cores)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has reaped (servers, service)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
