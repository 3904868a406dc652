"""Rebuilding and sweeping the index from MySQL, on real MariaDB and Redis.

``storage/reconcile`` and the ``rebuild-index`` command; the poller's sweep.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from datetime import datetime, timedelta, timezone

from prometheus_client import REGISTRY

from me2_devkit.testing.servers import free_port
from me2_devkit.testing.stack import cli_argv
from me2_scheduler.clock import epoch
from me2_scheduler.storage import reconcile
from me2_scheduler.workers import poller

from .fixtures_ops import OpsEnv, assert_one_error_line, invoke, run_cli, schedule_rows

DAY = timedelta(days=1)
GRACE_S = 60.0


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


def test_rebuild_with_mysql_unreachable_exits_1_with_one_error_line(ops: OpsEnv) -> None:
    path = ops.write_config(
        "no-mysql.yaml", data_source=f"root@tcp(127.0.0.1:{free_port()})/nothing?parseTime=true"
    )

    done = run_cli("rebuild-index", "-f", str(path))

    assert done.returncode == 1
    assert "MySQL" in assert_one_error_line(done.stderr)


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
