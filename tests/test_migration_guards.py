"""Migration guards: every statement a re-run would repeat names its change in a guard
comment, guards parse strictly, and each is present once migrated."""

from __future__ import annotations

import re

import pytest

from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.errors import StoreError
from me2_scheduler.storage.migrations import (
    Guard,
    Migration,
    Step,
    apply_migrations,
    available_migrations,
    split_steps,
)

from .fixtures_migrations import QUOTED, cursor
from .support import mysql_conf


def rerun_problems(step: Step) -> list[str]:
    """Why running ``step`` again after it ran would fail or change something."""
    code = " ".join(QUOTED.sub("''", step.sql).split())
    alter = re.match(r"ALTER\s+TABLE\s+(\w+)\s", code, re.IGNORECASE)
    changes = re.findall(r"\b(?:ADD|DROP|RENAME)\b", code, re.IGNORECASE)
    guard = step.unless
    if re.match(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b|RENAME\b|DROP\b", code, re.IGNORECASE):
        return [] if guard else [f"no guard on {code[:60]!r}"]
    if re.match(r"CREATE\s+TABLE\b", code, re.IGNORECASE):
        ok = re.match(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\b", code, re.IGNORECASE) or guard
        return [] if ok else [f"no IF NOT EXISTS nor guard on {code[:60]!r}"]
    if not alter or not changes:
        return []  # an UPDATE, MODIFY or COMMENT: the cut-run tests prove them re-runnable
    if guard is None:
        return [f"no guard on {code[:60]!r}"]
    name = "PRIMARY KEY" if guard.name == "PRIMARY" else guard.name
    problems = []
    if guard.table != alter.group(1) or not re.search(rf"\b{name}\b", code):
        problems.append(f"the guard '{guard}' does not name what {code[:60]!r} adds")
    if len(re.findall(r"\bADD\b", code, re.IGNORECASE)) > 1:
        problems.append(f"one guard for several additions in {code[:60]!r}: split it")
    return problems


def test_every_statement_a_rerun_would_repeat_carries_a_guard_naming_its_change() -> None:
    problems = [p for m in available_migrations() for s in m.steps() for p in rerun_problems(s)]

    assert problems == []
    assert sum(step.unless is not None for m in available_migrations() for step in m.steps()) == 8


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE t ADD COLUMN c INT",
        "-- unless column t.d\nALTER TABLE t ADD COLUMN c INT",
        "-- unless column u.c\nALTER TABLE t ADD COLUMN c INT",
        "-- unless column t.c\nALTER TABLE t ADD COLUMN c INT, ADD COLUMN d INT",
        "CREATE TABLE t (id INT)",
        "CREATE INDEX i ON t (c)",
    ],
)
def test_the_guard_check_finds_a_change_a_rerun_would_repeat(sql: str) -> None:
    assert [p for step in split_steps(sql) for p in rerun_problems(step)]


# -- guards -------------------------------------------------------------------------


def test_a_guard_comment_above_a_statement_becomes_its_step_guard() -> None:
    steps = split_steps(
        "-- prose first\n-- unless index diary_runs.PRIMARY (run_date, fire_time)\n"
        "ALTER TABLE diary_runs DROP PRIMARY KEY, ADD PRIMARY KEY (run_date, fire_time);\n"
        "-- unless column t.c\nALTER TABLE t ADD COLUMN c INT; UPDATE t SET c = 1;\n"
        "-- unless table t2\nCREATE TABLE t2 (id INT)"
    )

    assert [step.unless for step in steps] == [
        Guard("index", "diary_runs", "PRIMARY", ("run_date", "fire_time")),
        Guard("column", "t", "c"),
        None,
        Guard("table", "t2"),
    ]
    assert steps[1].sql == "ALTER TABLE t ADD COLUMN c INT"
    assert str(steps[0].unless) == "index diary_runs.PRIMARY (run_date, fire_time)"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("-- unless column t\nALTER TABLE t ADD COLUMN c INT", "unreadable guard"),
        ("-- unless table t.c\nCREATE TABLE t (c INT)", "unreadable guard"),
        ("-- unless column t.c (c)\nALTER TABLE t ADD COLUMN c INT", "unreadable guard"),
        ("-- unless index t.i (a,)\nALTER TABLE t ADD INDEX i (a)", "unreadable guard"),
        ("-- unless colum t.c\nALTER TABLE t ADD COLUMN c INT", "unreadable guard"),
        (
            "-- unless column t.c\n-- unless column t.d\nALTER TABLE t ADD c INT, ADD d INT",
            "one guard per statement",
        ),
        ("SELECT 1;\n-- unless table t\n", "followed by no statement"),
    ],
)
def test_a_misplaced_or_malformed_guard_is_refused_with_the_migration_named(
    sql: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split_steps(sql)
    with pytest.raises(StoreError, match=f"migration 009_broken: .*{message}"):
        Migration("009_broken", sql).steps()


def test_every_shipped_guard_is_present_once_migrated_and_a_near_miss_is_not(
    mariadb: MariaDBServer, database: str
) -> None:
    apply_migrations(mysql_conf(mariadb, database))
    guards = [step.unless for m in available_migrations() for step in m.steps() if step.unless]

    with cursor(mariadb, database) as cur:
        assert [guard for guard in guards if not guard.present(cur)] == []
        assert not Guard("index", "diary_runs", "PRIMARY", ("run_date",)).present(cur)
        assert not Guard("index", "diary_runs", "PRIMARY", ("fire_time", "run_date")).present(cur)
        assert Guard("index", "diary_runs", "primary", ("RUN_DATE", "fire_time")).present(cur)
        assert not Guard("index", "avatar_schedules", "idx_fire_time").present(cur)
        assert not Guard("column", "diary_runs", "last_error").present(cur)
        assert not Guard("table", "no_such_table").present(cur)
        assert Guard("table", "diary_runs").present(cur)
