"""No page load scans a table: every statement the console runs, EXPLAINed on real rows.

The pages are rendered in-process on a MariaDB table of 30 000 avatars (ANALYZEd,
so the optimizer chooses as it would at a million); each SQL statement they
send is recorded as sent and EXPLAINed. An access must use an index: ``ALL``
(a table scan) is refused, ``index`` (a whole-index walk) only where a LIMIT
stops it early, and nothing is sorted by filesort. The MySQL 8 side is the
same SQL text: ``test_migrations`` checks it for MariaDB-only syntax.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pymysql
import pytest

from me2_devkit.simulators import RunningSimulator
from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.config import Config
from me2_scheduler.console.server import Console
from me2_scheduler.console.web import parse_request
from me2_scheduler.storage.reconcile import rebuild

from .fixtures_console import BASIC, HOST, console_config
from .support import insert_schedules, this_second

PAGES = (
    "/console/",
    "/console/timeline?hours=1",
    "/console/paused",
    "/console/paused?reason=user",
    "/console/paused?reason=all&after=20500",
    "/console/paused?reason=unknown",
    "/console/paused?reason=failures&q=deadline",
    "/console/avatars/123",
    "/console/avatars/123?cursor=999999",
    "/console/index",
)
FULL_SCANS = {"ALL"}


@pytest.fixture
def console(
    dispatch_config: Callable[..., Config],
    action_simulator: RunningSimulator,
    mariadb: MariaDBServer,
    database: str,
) -> Iterator[Console]:
    config = console_config(dispatch_config(action_simulator.address))
    _seed(mariadb, database)
    made = Console(config)
    rebuild(made.store, made.index)
    yield made
    made.close()


def _seed(mariadb: MariaDBServer, database: str) -> None:
    """30 000 avatars: mostly active, 4 000 paused by users, 200 by failures, 2 000 disabled."""
    base = this_second() + timedelta(minutes=5)
    rows: list[tuple] = []
    for avatar_id in range(1, 30_001):
        due = base + timedelta(seconds=avatar_id % 7200)
        if avatar_id % 15 == 0:
            rows.append((avatar_id, "disabled", due, None))
        elif avatar_id % 7 == 0:
            rows.append((avatar_id, "paused", due, "user" if avatar_id % 140 else "failures"))
        else:
            rows.append((avatar_id, "active", due, None))
    insert_schedules(mariadb, database, rows)
    history = ",".join(
        f"({a % 30_000 + 1}, 'auto', UTC_TIMESTAMP() - INTERVAL {a} SECOND,"
        f" UTC_TIMESTAMP() - INTERVAL {a} SECOND, 'success', {a % 900})"
        for a in range(20_000)
    )
    mariadb.query(
        database,
        "INSERT INTO avatar_schedule_history (avatar_id, `trigger`,"
        " planned_time, started_time, outcome, lag_ms) VALUES " + history,
    )
    for table in ("avatar_schedules", "avatar_schedule_history", "diary_runs"):
        mariadb.query(database, f"ANALYZE TABLE {table}")


def _record(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every statement pymysql sends, with its parameters in place."""
    sent: list[str] = []
    execute = pymysql.cursors.Cursor.execute

    def recording(self: Any, query: str, args: Any = None) -> Any:
        sent.append(self.mogrify(query, args))
        return execute(self, query, args)

    monkeypatch.setattr(pymysql.cursors.Cursor, "execute", recording)
    return sent


def _explain(mariadb: MariaDBServer, database: str, statement: str) -> list[dict[str, Any]]:
    conn = pymysql.connect(
        host="127.0.0.1",
        port=mariadb.port,
        user="root",
        database=database,
        cursorclass=pymysql.cursors.DictCursor,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("EXPLAIN " + statement)
            return list(cur.fetchall())
    finally:
        conn.close()


def _problems(statement: str, plan: list[dict[str, Any]]) -> list[str]:
    found = []
    for step in plan:
        table, access, extra = step["table"] or "", step["type"], step["Extra"] or ""
        if table.startswith("<derived"):  # the capped count's own LIMITed rows
            continue
        if access in FULL_SCANS or (access == "index" and "LIMIT" not in statement.upper()):
            found.append(f"{table}: {access} scan")
        if step["key"] is None and table:
            found.append(f"{table}: no index used")
        if "filesort" in extra:
            found.append(f"{table}: {extra}")
    return found


def test_every_statement_of_every_page_load_reads_through_an_index(
    console: Console, mariadb: MariaDBServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _record(monkeypatch)
    for target in PAGES:
        headers = {"Accept": "text/html", "Host": HOST, "Authorization": BASIC}
        answer = console.app.handle(parse_request("GET", target, headers, b"", "/console"))
        assert answer.status == 200, (target, answer.body[:500])
    monkeypatch.undo()
    selects = {s for s in sent if s.lstrip().upper().startswith("SELECT") and " FROM " in s}
    assert len(selects) >= 8, sent  # the pages did read MySQL
    tables = {"avatar_schedules", "avatar_schedule_history", "diary_runs"}
    assert all(any(t in s for s in selects) for t in tables)
    problems = {
        statement: found
        for statement in sorted(selects)
        if (found := _problems(statement, _explain(mariadb, database, statement)))
    }
    assert problems == {}
    scan = "SELECT avatar_id FROM avatar_schedules WHERE last_error LIKE 'x%' ORDER BY version"
    assert _problems(scan, _explain(mariadb, database, scan))  # the check does see a scan
