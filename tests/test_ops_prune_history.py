"""``prune-history`` on a real MariaDB: exactly the old rows go, a batch at a time."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from me2_devkit.testing.servers import free_port
from me2_scheduler.ops.prune import cutoff, parse_age, prune

from .fixtures_ops import OpsEnv, assert_one_error_line, invoke, run_cli
from .support import this_second


def insert_history(ops: OpsEnv, started: datetime, count: int) -> list[int]:
    """``count`` history rows started at ``started``; returns their ids."""
    naive = started.astimezone(timezone.utc).replace(tzinfo=None)
    first = ops.sql("SELECT COALESCE(MAX(id), 0) FROM avatar_schedule_history")[0][0]
    values = ", ".join(["(%s, 'auto', %s, 'success')"] * count)
    params = [value for avatar_id in range(1, count + 1) for value in (avatar_id, naive)]
    ops.sql(
        "INSERT INTO avatar_schedule_history (avatar_id, `trigger`, started_time, outcome)"
        f" VALUES {values}",
        *params,
    )
    return [
        row[0] for row in ops.sql("SELECT id FROM avatar_schedule_history WHERE id > %s", first)
    ]


def history_ids(ops: OpsEnv) -> list[int]:
    return [row[0] for row in ops.sql("SELECT id FROM avatar_schedule_history ORDER BY id")]


def test_prune_history_deletes_exactly_the_rows_older_than_the_age(ops: OpsEnv) -> None:
    now = this_second()
    insert_history(ops, now - timedelta(days=40), 250)
    kept = insert_history(ops, now - timedelta(days=29), 30)
    kept += insert_history(ops, now - timedelta(hours=1), 20)

    done = run_cli(
        "prune-history", "-f", str(ops.config_path), "--older-than", "30d", "--batch", "100"
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("deleted 250 history rows started before ")
    assert history_ids(ops) == sorted(kept)


def test_prune_commits_each_batch_before_the_next_one_starts(ops: OpsEnv) -> None:
    insert_history(ops, this_second() - timedelta(days=40), 250)
    before = cutoff(timedelta(days=30))
    seen_by_another_connection: list[int] = []

    def batch_done(deleted: int) -> None:
        (count,) = ops.sql("SELECT COUNT(*) FROM avatar_schedule_history")[0]
        seen_by_another_connection.append(count)

    deleted = prune(ops.store, before, batch=100, progress=batch_done)

    assert deleted == 250
    assert seen_by_another_connection == [150, 50, 0]


def test_prune_history_json_and_a_dry_table_delete_nothing(ops: OpsEnv) -> None:
    kept = insert_history(ops, this_second() - timedelta(days=2), 5)

    result = invoke("prune-history", "-f", str(ops.config_path), "--older-than", "3d", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deleted"] == 0
    assert history_ids(ops) == kept


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30d", timedelta(days=30)),
        ("1.5d", timedelta(hours=36)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_an_age_is_days_hours_or_a_go_duration(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["30", "d", "30x", "0d", "0", "-1h", "1w", ""])
def test_an_age_that_is_not_a_positive_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_age(text)


def test_prune_history_with_a_bad_age_is_a_usage_error(ops: OpsEnv) -> None:
    result = invoke("prune-history", "-f", str(ops.config_path), "--older-than", "30x")

    assert result.exit_code == 2
    assert "--older-than" in result.stderr


def test_prune_history_with_mysql_unreachable_exits_1_with_one_error_line(ops: OpsEnv) -> None:
    path = ops.write_config(
        "no-mysql.yaml", data_source=f"root@tcp(127.0.0.1:{free_port()})/x?parseTime=true"
    )

    done = run_cli("prune-history", "-f", str(path), "--older-than", "30d")

    assert done.returncode == 1
    assert "MySQL" in assert_one_error_line(done.stderr)
