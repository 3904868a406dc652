"""Verifying the index against MySQL and repairing it, on real MariaDB and Redis.

``storage/reconcile``'s verifier and the ``verify-index [--repair]`` command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from me2_devkit.testing.servers import free_port
from me2_scheduler.storage import reconcile
from me2_scheduler.storage.reconcile import EXTRA, MISSING, WRONG_SCORE, Verifier, classify

from .fixtures_ops import OpsEnv, assert_one_error_line, invoke, run_cli, schedule_rows

DAY = timedelta(days=1)


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
