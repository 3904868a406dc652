"""The diary's world: this test's database and config, and the session's Diary simulator.

``make_env`` writes a config for the diary role (its cron, concurrency and
timings), migrates the database and returns an ``Env`` that seeds avatars,
makes schedulers and run stores (closed after the test) and reads what the
simulator was called with.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.configs import SERVICE_NAME
from me2_devkit.testing.servers import MariaDBServer, temp_root
from me2_devkit.testing.stack import Simulator, cli_argv
from me2_scheduler.config import Config, load_config
from me2_scheduler.storage.diary_runs import DiaryRunStore
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.workers.diary import DiaryScheduler
from me2_scheduler.workers.diary_progress import RunResult

from .support import FakeClock, insert_schedules, serving, write_config

NEVER_NEAR = "0 3 1 1 *"  # a cron that does not fire while these tests run
SEEDED_DUE = datetime(2024, 1, 1)  # every seeded avatar's next time: long past


@dataclass
class Env:
    """One test's database, config and simulator, and the schedulers it made."""

    mariadb: MariaDBServer
    database: str
    config_path: Path
    config: Config
    sim: SimulatorControl
    made: list[Any] = field(default_factory=list)

    def query(self, sql: str, *args: object) -> list[tuple]:
        return self.mariadb.query(self.database, sql, args or None)

    def seed(self, avatar_ids: range | list[int], status: str = "active") -> None:
        rows = [(avatar_id, status, SEEDED_DUE) for avatar_id in avatar_ids]
        insert_schedules(self.mariadb, self.database, rows)

    def scheduler(self, **kwargs: Any) -> DiaryScheduler:
        made = DiaryScheduler(self.config, **kwargs)
        self.made.append(made)
        return made

    def run_due_at(self, moment: datetime, **kwargs: Any) -> RunResult | None:
        """A new scheduler whose clock says ``moment`` runs what is due then (a process start)."""
        return self.scheduler(clock=FakeClock(moment), **kwargs).run_due(moment)

    def runs(self) -> DiaryRunStore:
        store = DiaryRunStore(self.config.mysql)
        self.made.append(store)
        return store

    def calls(self, run_date: str) -> dict[int, int]:
        """Diary calls per avatar for ``run_date``, as the simulator counted them."""
        suffix = f":{run_date}"
        per_key = self.sim.stats().calls_per_key
        return {int(k.split(":")[0]): n for k, n in per_key.items() if k.endswith(suffix)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = cli_argv("diary", *args, "-f", str(self.config_path))
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def diary_simulator() -> Iterator[Simulator]:
    """The Diary simulator as a process, shared by the session (``sim`` resets it per test)."""
    yield from serving(Simulator("diary", temp_root("me2-diary-sim-")))


@pytest.fixture
def sim(diary_simulator: Simulator) -> Iterator[SimulatorControl]:
    """The session's simulator, answering at once and successfully, with its counts reset."""
    control = SimulatorControl(diary_simulator.address)
    control.configure(latency_ms=0, fail_rate=0.0, fail_avatars=[], hang_avatars=[], hang=False)
    control.reset()
    try:
        yield control
    finally:
        control.close()


@pytest.fixture
def make_env(
    tmp_path: Path,
    mariadb: MariaDBServer,
    database: str,
    diary_simulator: Simulator,
    sim: SimulatorControl,
) -> Iterator[Callable[..., Env]]:
    """Make an ``Env`` from the diary's cron and timings; what it made is closed after."""
    envs: list[Env] = []

    def make(
        cron: str = NEVER_NEAR,
        concurrency: int = 1,
        timeout_s: float = 5,
        grace_s: float = 0,
        stale_s: float = 120,
    ) -> Env:
        timings = {
            "CronExpression": cron,
            "Concurrency": concurrency,
            "TimeoutSeconds": timeout_s,
            "MisfireGraceSeconds": grace_s,
            "StaleRunSeconds": stale_s,
        }
        diary = [diary_simulator.address]
        settings = {
            "Name": SERVICE_NAME,
            "Timezone": "UTC",
            "Mysql": {"DataSource": mariadb.dsn(database)},
            "ActionRpc": {"Endpoints": diary},
            "DiaryRpc": {"Endpoints": diary},
            "DiarySchedule": timings,
            "Log": {"Level": "info"},
        }
        path = write_config(tmp_path / "scheduler.yaml", settings)
        config = load_config(str(path))
        apply_migrations(config.mysql)
        env = Env(mariadb, database, path, config, sim)
        envs.append(env)
        return env

    yield make
    for env in envs:
        for made in env.made:
            made.close()


def diary_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "me2_scheduler.diary"]
