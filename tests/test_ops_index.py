"""Rebuilding, sweeping and verifying the index against MySQL on real MariaDB and Redis.

``storage/reconcile`` and the ``rebuild-index`` / ``verify-index [--repair]`` commands.
"""

from __future__ import annotations

import json
import os
import pty
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from me2_devkit.testing.servers import MariaDBServer, RedisServer, free_port
from me2_devkit.testing.stack import cli_argv
from me2_scheduler.clock import epoch
from me2_scheduler.storage import reconcile
from me2_scheduler.storage.reconcile import EXTRA, MISSING, WRONG_SCORE, Verifier, classify
from me2_scheduler.workers import poller
from tests.ops_fixtures import (
    OpsEnv,
    assert_one_error_line,
    config_text,
    invoke,
    ops_env,
    run_cli,
)

DAY = timedelta(days=1)


@pytest.fixture
def ops(
    tmp_path: Path, mariadb: MariaDBServer, redis_server: RedisServer, database: str, redis_key: str
) -> Iterator[OpsEnv]:
    with ops_env(tmp_path, mariadb, redis_server, database, redis_key) as env:
        yield env


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


# -- rebuild ----------------------------------------------------------------------------


def test_rebuild_index_of_100_000_rows_makes_due_equal_to_mysqls_active_set(ops: OpsEnv) -> None:
    ops.insert_schedules(schedule_rows(100_000, datetime.now(timezone.utc) + DAY))
    ops.index.put_due_many([(999_999_999, 1), (10, 5)])  # stale: an unknown and a paused avatar
    expected = ops.active_due()

    done = run_cli("rebuild-index", "-f", str(ops.config_path))

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == f"index rebuilt: {len(expected)} active avatars"
    assert len(expected) == 100_000 - 10_000 - 4_000 + 2_000  # every 50th is a 10th and a 25th
    assert ops.due_set() == expected
    assert ops.index.has_meta()


def test_rebuild_index_json_is_the_row_count(ops: OpsEnv) -> None:
    ops.insert_schedules(schedule_rows(300, datetime.now(timezone.utc)))

    result = invoke("rebuild-index", "-f", str(ops.config_path), "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"rows": len(ops.active_due())}


def test_rebuild_index_draws_a_progress_bar_when_stderr_is_a_terminal(ops: OpsEnv) -> None:
    ops.insert_schedules(schedule_rows(3_000, datetime.now(timezone.utc)))
    primary, secondary = pty.openpty()
    try:
        argv = cli_argv("rebuild-index", "-f", str(ops.config_path), "--chunk", "1000")
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=secondary, text=True, timeout=120, check=False
        )
        os.close(secondary)
        drawn = read_all(primary)
    finally:
        os.close(primary)

    assert done.returncode == 0
    assert done.stdout.strip() == f"index rebuilt: {len(ops.active_due())} active avatars"
    assert "rebuilding the index" in drawn
    assert f"{len(ops.active_due())}/{len(ops.active_due())}" in drawn


def read_all(fd: int) -> str:
    """Everything written to a pty whose other end is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_rebuild_reports_progress_in_increments_adding_up_to_the_row_count(ops: OpsEnv) -> None:
    ops.insert_schedules(schedule_rows(2_500, datetime.now(timezone.utc)))
    steps: list[int] = []

    rows = reconcile.rebuild(ops.store, ops.index, chunk=1000, progress=steps.append)

    assert rows == len(ops.active_due())
    assert sum(steps) == rows
    assert steps[:-1] == [1000] * (len(steps) - 1)


# -- verify: the classification ------------------------------------------------------


@pytest.mark.parametrize(
    ("mysql_due", "due_score", "inflight", "kind"),
    [
        (100, 100.0, False, None),  # active, in due at MySQL's time
        (100, None, True, None),  # active, in flight: present, score not checked
        (100, 999.0, True, None),  # in both sets: still present, not score-checked
        (100, None, False, MISSING),
        (100, 101.0, False, WRONG_SCORE),
        (100, 100.5, False, WRONG_SCORE),
        (None, None, False, None),  # not active and nowhere: fine
        (None, 100.0, False, EXTRA),
        (None, None, True, EXTRA),
    ],
)
def test_each_avatar_is_classified_by_its_mysql_time_and_index_membership(
    mysql_due: int | None, due_score: float | None, inflight: bool, kind: str | None
) -> None:
    assert classify(mysql_due, due_score, inflight) == kind


# -- verify and repair -------------------------------------------------------------------


@dataclass
class Planted:
    missing: list[int]
    wrong_score: list[int]
    extra: list[int]
    leased: int  # active and in flight: not a difference

    def counts(self) -> dict[str, int]:
        return {
            MISSING: len(self.missing),
            WRONG_SCORE: len(self.wrong_score),
            EXTRA: len(self.extra),
        }


@pytest.fixture
def planted(ops: OpsEnv) -> Planted:
    """300 avatars indexed correctly, then 3 missing, 5 wrong-score and 5 extra members planted."""
    ops.insert_schedules(schedule_rows(300, datetime.now(timezone.utc) + DAY))
    reconcile.rebuild(ops.store, ops.index)
    client, keys = ops.index.client, ops.index.keys
    plant = Planted(missing=[3, 51, 299], wrong_score=[7, 8, 121, 122, 201], extra=[], leased=101)
    client.zrem(keys.due, *plant.missing)
    for avatar_id in plant.wrong_score:
        client.zincrby(keys.due, 3600, avatar_id)
    client.zadd(keys.due, {"20": 1, "75": 2, "250": 3, "99999": 4})  # paused, disabled, no row
    client.zadd(keys.inflight, {"100": 5})  # paused (100 is a 10th and a 25th: disabled)
    plant.extra = [20, 75, 100, 250, 99999]
    client.zrem(keys.due, plant.leased)
    client.zadd(keys.inflight, {str(plant.leased): 9_999_999_999})
    return plant


def finding_counts(report: dict[str, Any]) -> dict[str, int]:
    return {kind: report[kind]["count"] for kind in (MISSING, WRONG_SCORE, EXTRA)}


def test_verify_reports_each_planted_difference_by_kind_with_its_ids_and_exits_1(
    ops: OpsEnv, planted: Planted
) -> None:
    done = run_cli("verify-index", "-f", str(ops.config_path), "--json")

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert finding_counts(report) == planted.counts()
    assert report[MISSING]["sample"] == planted.missing
    assert report[WRONG_SCORE]["sample"] == planted.wrong_score
    assert sorted(report[EXTRA]["sample"]) == planted.extra
    assert report["clean"] is False
    assert report["checked"]["active"] == len(ops.active_due())


def test_verify_repair_fixes_every_difference_and_a_second_verify_is_clean(
    ops: OpsEnv, planted: Planted
) -> None:
    repaired = invoke("verify-index", "-f", str(ops.config_path), "--repair", "--json")

    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.stdout)
    assert finding_counts(report) == planted.counts()
    assert {kind: report[kind]["repaired"] for kind in planted.counts()} == planted.counts()
    assert report["remaining"] == 0
    expected = ops.active_due()
    del expected[planted.leased]
    assert ops.due_set() == expected
    assert ops.inflight_set() == {planted.leased}

    again = invoke("verify-index", "-f", str(ops.config_path), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["differences"] == 0


def test_verify_text_names_the_kinds_and_asks_for_repair(ops: OpsEnv, planted: Planted) -> None:
    result = invoke("verify-index", "-f", str(ops.config_path), "--sample", "2")

    assert result.exit_code == 1
    assert "missing      3  e.g. 3, 51" in result.stdout
    assert "wrong score  5  e.g. 7, 8" in result.stdout
    assert "13 difference(s); run with --repair to fix them" in result.stdout


@pytest.mark.parametrize("chunk", [7, 64, 5000])
def test_verify_counts_the_same_whatever_the_chunk_size(
    ops: OpsEnv, planted: Planted, chunk: int
) -> None:
    report = Verifier(ops.store, ops.index, chunk=chunk, sample=100).run()

    assert {kind: f.count for kind, f in report.findings.items()} == planted.counts()
    assert sorted(report.findings[EXTRA].sample) == planted.extra
    assert report.checked_members == len(ops.due_set()) + len(ops.inflight_set())


def test_a_clean_index_verifies_clean_with_exit_0(ops: OpsEnv) -> None:
    ops.insert_schedules(schedule_rows(500, datetime.now(timezone.utc)))
    reconcile.rebuild(ops.store, ops.index)

    result = invoke("verify-index", "-f", str(ops.config_path))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("the index matches MySQL")


class StaleFirstRead:
    """A store whose first answer to "which are active" is stale: none is."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.stale_answers = 0

    def active_among(self, avatar_ids: list[int]) -> set[int]:
        self.stale_answers += 1
        return set() if self.stale_answers == 1 else self._store.active_among(avatar_ids)

    def active_due_times(self, avatar_ids: list[int]) -> dict[int, datetime]:
        return self._store.active_due_times(avatar_ids)


def test_repair_never_removes_a_member_that_mysql_shows_active_on_the_second_look(
    ops: OpsEnv,
) -> None:
    ops.insert_schedules(schedule_rows(30, datetime.now(timezone.utc) + DAY))
    reconcile.rebuild(ops.store, ops.index)
    ops.index.put_due(20, 1)  # a paused avatar: a real extra
    store = StaleFirstRead(ops.store)

    verifier = Verifier(store, ops.index, repair=True)  # type: ignore[arg-type]
    verifier.check_members()

    assert store.stale_answers == 1
    assert verifier.report.findings[EXTRA].count == 1
    assert verifier.report.findings[EXTRA].sample == [20]
    assert ops.due_set() == ops.active_due()


def test_repair_of_a_missing_avatar_leaves_one_that_went_in_flight_meanwhile(
    ops: OpsEnv,
) -> None:
    ops.insert_schedules(schedule_rows(30, datetime.now(timezone.utc) + DAY))
    reconcile.rebuild(ops.store, ops.index)
    ops.index.client.zrem(ops.index.keys.due, 1, 2)
    verifier = Verifier(ops.store, ops.index, repair=True)
    # Avatar 2 is claimed between the check and the repair: it must stay in flight only.
    examine = verifier._examine

    def claimed_meanwhile(ids: list[int]) -> dict:
        found = examine(ids)
        ops.index.client.zadd(ops.index.keys.inflight, {"2": 9_999_999_999})
        return found

    verifier._examine = claimed_meanwhile  # type: ignore[method-assign]
    verifier.check_active()

    assert ops.inflight_set() == {2}
    assert 2 not in ops.due_set()
    assert ops.due_set()[1] == ops.active_due()[1]


# -- failures ------------------------------------------------------------------------------


def test_verify_with_redis_unreachable_exits_1_with_one_error_line(ops: OpsEnv) -> None:
    path = ops.write_config("no-redis.yaml", redis_host=f"127.0.0.1:{free_port()}")

    done = run_cli("verify-index", "-f", str(path))

    assert done.returncode == 1
    assert "redis" in assert_one_error_line(done.stderr).lower()


def test_rebuild_with_mysql_unreachable_exits_1_with_one_error_line(ops: OpsEnv) -> None:
    path = ops.tmp_path / "no-mysql.yaml"
    path.write_text(
        config_text(
            data_source=f"root@tcp(127.0.0.1:{free_port()})/nothing?parseTime=true",
            redis_host=ops.redis_server.address,
            redis_key=ops.redis_key,
        )
    )

    done = run_cli("rebuild-index", "-f", str(path))

    assert done.returncode == 1
    assert "MySQL" in assert_one_error_line(done.stderr)


def test_a_member_that_is_not_an_avatar_id_fails_verify_with_one_error_line(ops: OpsEnv) -> None:
    ops.index.client.zadd(ops.index.keys.due, {"not-an-id": 1})

    result = invoke("verify-index", "-f", str(ops.config_path))

    assert result.exit_code == 1
    assert "'not-an-id', which is not an avatar_id" in assert_one_error_line(result.stderr)


def test_a_bad_config_exits_2_with_the_config_error_line(ops: OpsEnv) -> None:
    path = ops.write_config("bad.yaml", timezone="Not/AZone")

    result = invoke("verify-index", "-f", str(path))

    assert result.exit_code == 2
    assert result.stderr.startswith("config error: Timezone")


# -- sweep ------------------------------------------------------------------------------

GRACE_S = 60.0


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_sweep_re_adds_only_overdue_active_avatars_missing_from_both_sets(ops: OpsEnv) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ops.insert_schedules(
        [
            (1, "active", now - timedelta(days=1), None),  # lost: the one to repair
            (2, "active", now - timedelta(days=1), None),  # in due at a newer time: kept there
            (3, "active", now - timedelta(days=1), None),  # in flight: its worker settles it
            (4, "active", now - timedelta(seconds=5), None),  # lost, but within the grace period
            (5, "active", now + timedelta(days=1), None),  # lost, not due yet
            (6, "paused", now - timedelta(days=1), "user"),
        ]
    )
    reconcile.rebuild(ops.store, ops.index)
    ops.index.client.zrem(ops.index.keys.due, 1, 4, 5)
    newer = epoch(now) + 600
    ops.index.put_due(2, newer)
    assert ops.index.claim_one(3, lease_s=600) is not None
    before = counted("scheduler_index_repaired_total")

    repaired = poller.sweep(ops.store, ops.index, GRACE_S)

    assert repaired == 1
    assert ops.due_set() == {1: ops.active_due()[1], 2: newer}
    assert ops.inflight_set() == {3}
    assert counted("scheduler_index_repaired_total") == before + 1


def test_sweep_pages_through_every_overdue_row(ops: OpsEnv) -> None:
    overdue = datetime.now(timezone.utc) - timedelta(hours=1)
    ops.insert_schedules((avatar_id, "active", overdue, None) for avatar_id in range(1, 12))
    reconcile.rebuild(ops.store, ops.index)
    ops.index.client.zrem(ops.index.keys.due, 2, 5, 6, 11)

    swept = reconcile.sweep(ops.store, ops.index, GRACE_S, page=3)

    assert swept == reconcile.Swept(repaired=[2, 5, 6, 11])
    assert ops.due_set() == ops.active_due()


def test_sweep_rebuilds_the_whole_index_when_its_meta_is_gone(ops: OpsEnv) -> None:
    now = datetime.now(timezone.utc)
    ops.insert_schedules(
        [
            (1, "active", now - timedelta(days=1), None),
            (2, "active", now + timedelta(days=1), None),
            (3, "disabled", now, None),
        ]
    )
    ops.index.put_due(3, epoch(now))  # stale: the rebuild drops it
    before = counted("scheduler_index_rebuilds_total")

    rows = poller.sweep(ops.store, ops.index, GRACE_S)

    assert rows == 2
    assert ops.index.has_meta()
    assert ops.due_set() == ops.active_due()
    assert counted("scheduler_index_rebuilds_total") == before + 1


def test_a_sweep_with_nothing_lost_writes_nothing(ops: OpsEnv) -> None:
    overdue = datetime.now(timezone.utc) - timedelta(hours=1)
    ops.insert_schedules((avatar_id, "active", overdue, None) for avatar_id in range(1, 6))
    reconcile.rebuild(ops.store, ops.index)

    assert reconcile.sweep(ops.store, ops.index, GRACE_S) == reconcile.Swept()
    assert ops.due_set() == ops.active_due()
