"""Config fuzzing: random mutations of the example configs load, or fail with one clear line.

Mutations are made to the parsed tree (keys deleted, renamed in another case,
doubled; values replaced by other types, huge numbers, unicode, nesting) and
to the raw text (characters inserted, deleted, replaced: broken YAML). Every
mutant either loads into a usable ``Config`` or raises ``ConfigError`` whose
text is one line ``<key>: <problem>``; any other exception is a bug. A few
mutants also go through ``me2-scheduler check-config`` as a real process:
exit 0, or exit 2 with exactly one stderr line ``config error: ...``.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from me2_devkit.testing.stack import cli_argv
from me2_scheduler import policy
from me2_scheduler.config import Config, describe, load_config, service_timezone
from me2_scheduler.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("scheduler-dev.yaml", "scheduler-test.yaml", "scheduler-demo.yaml")
DEMO_ENV = {
    "DEMO_RPC_PORT": "18008",
    "DEMO_MYSQL_PORT": "13306",
    "DEMO_REDIS_PORT": "16379",
    "DEMO_ACTION_PORT": "18007",
    "DEMO_DIARY_PORT": "18009",
}
ONE_LINE_ERROR = re.compile(r"^[^\n]+?: [^\n]+$")
SUBPROCESS_RUNS = 8

ODD_STRINGS = [
    "",
    " ",
    "${UNSET_VAR}",
    "$",
    "yes",
    "on",
    "0x1F",
    "1e400",
    "-0",
    "NaN",
    ".inf",
    "~",
    "null",
    "127.0.0.1:0",
    "host:99999",
    "[::1]:80",
    "ß",
    "🙂",
    "\u202e",
    "\u2028",
    "a\nb",
    "x" * 5000,
    "0 22 * * *",
    "@every 1h",
    "Asia/Shanghai",
    "Mars/Olympus",
    "root@tcp(127.0.0.1:3306)/me2",
    "user:pass@unix(/tmp/x.sock)/db?loc=Nowhere",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, 65536]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 1e300, 0.001, -0.5]),
    st.text(max_size=20),
    st.sampled_from(ODD_STRINGS),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def example_text(name: str) -> str:
    return (REPO / "etc" / name).read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo config's ${DEMO_*} ports, as scripts/demo.py sets them."""
    for name, value in DEMO_ENV.items():
        monkeypatch.setenv(name, value)


def paths(tree: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path and list index path in a parsed YAML tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield (*prefix, i)
            yield from paths(value, (*prefix, i))


def mutate_tree(tree: Any, path: tuple, operation: str, value: Any) -> None:
    """Apply one mutation at ``path`` (its parent must exist) in place."""
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if operation == "delete":
        del parent[last]
    elif operation == "replace":
        parent[last] = value
    elif operation == "wrap":
        parent[last] = [parent[last]] if isinstance(value, bool) else {"X": parent[last]}
    elif operation == "recase" and isinstance(last, str):
        parent[last.swapcase()] = parent.pop(last)  # keys are case-insensitive
    elif operation == "double" and isinstance(last, str):
        parent[last.swapcase()] = value  # a second spelling of the same key


def check_mutant(path: Path) -> Config | None:
    """Load ``path``: a Config, or None after a well-formed ConfigError; anything else raises."""
    try:
        config = load_config(str(path))
    except ConfigError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1 and ONE_LINE_ERROR.match(message), repr(message)
        assert message.startswith(f"{exc.key}: ")
        return None
    assert_usable(config)
    return config


def assert_usable(config: Config) -> None:
    """A config that loads must also be usable: described, and its times computable."""
    describe(config)
    service_timezone(config)
    intervals = config.action_schedule
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    policy.next_due(
        now, intervals.min_interval_hours, intervals.max_interval_hours, random.Random()
    )
    policy.retry_due(now, config.schedule.retry_delay_seconds)
    schedule, diary = config.schedule, config.diary_schedule
    waits = [
        schedule.scan_interval,
        schedule.poll_interval,
        schedule.lease_seconds,
        schedule.sweep_grace_seconds,
        schedule.shutdown_timeout_seconds,
        diary.timeout_seconds,
        diary.misfire_grace_seconds,
        diary.stale_run_seconds,
        config.timeout_ms / 1000,
        config.action_rpc.timeout_ms / 1000,
        config.diary_rpc.timeout_ms / 1000,
    ]
    for seconds in waits:  # every one is slept, waited on or added to a datetime
        assert seconds <= threading.TIMEOUT_MAX
        assert now + timedelta(seconds=seconds) >= now - timedelta(seconds=seconds)
    assert now - timedelta(days=config.history.retention_days) <= now


MUTATIONS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10_000),
        st.sampled_from(["delete", "replace", "replace", "wrap", "recase", "double"]),
        VALUES,
    ),
    min_size=1,
    max_size=3,
)


def tree_mutant(name: str, mutations: list[tuple[int, str, Any]]) -> str:
    tree = yaml.safe_load(example_text(name))
    for pick, operation, value in mutations:
        found = list(paths(tree))
        if not found:
            break
        mutate_tree(tree, found[pick % len(found)], operation, value)
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


EDIT_CHARS = st.sampled_from([*":-{}[]\"'\t\n #&*!|>%@`,?$\\", "\x00", "\u2028", "é"])
EDITS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=100_000),
        st.sampled_from(["insert", "delete", "replace", "truncate"]),
        st.text(alphabet=EDIT_CHARS, min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


def text_mutant(name: str, edits: list[tuple[int, str, str]]) -> str:
    text = example_text(name)
    for pick, operation, chunk in edits:
        at = pick % (len(text) + 1)
        if operation == "insert":
            text = text[:at] + chunk + text[at:]
        elif operation == "delete":
            text = text[:at] + text[at + len(chunk) :]
        elif operation == "replace":
            text = text[:at] + chunk + text[at + len(chunk) :]
        else:
            text = text[:at]
    return text


FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_configs_load_as_they_are(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(example_text(name), encoding="utf-8")
    assert check_mutant(path) is not None


# How a mutant is made: changes to the parsed tree, or edits of the raw text.
MUTANTS = [
    pytest.param(MUTATIONS, tree_mutant, id="tree"),
    pytest.param(EDITS, text_mutant, id="text"),
]


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize(("changes", "mutant"), MUTANTS)
@FUZZ
@given(data=st.data())
def test_a_mutated_config_loads_or_fails_with_one_line(
    name: str,
    changes: st.SearchStrategy[list],
    mutant: Callable[[str, list], str],
    data: st.DataObject,
    tmp_path: Path,
) -> None:
    path = tmp_path / "mutant.yaml"
    path.write_text(mutant(name, data.draw(changes, label="changes")), encoding="utf-8")
    check_mutant(path)


def numeric_paths(tree: Any) -> list[tuple]:
    return [p for p in paths(tree) if _number(_at(tree, p))]


def _at(tree: Any, path: tuple) -> Any:
    for step in path:
        tree = tree[step]
    return tree


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


EXTREMES = (0, -1, 1e-300, 1e300, 2**63, 10**30, 1e12)


@pytest.mark.parametrize("extreme", EXTREMES)
def test_every_numeric_key_at_an_extreme_is_refused_or_usable(
    extreme: float, tmp_path: Path
) -> None:
    text = example_text("scheduler-test.yaml")
    for i, path in enumerate(numeric_paths(yaml.safe_load(text))):
        tree = yaml.safe_load(text)
        mutate_tree(tree, path, "replace", extreme)
        mutant = tmp_path / f"extreme{i}.yaml"
        mutant.write_text(yaml.safe_dump(tree), encoding="utf-8")
        check_mutant(mutant)


def test_a_config_that_is_not_utf8_fails_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(example_text("scheduler-test.yaml").encode("utf-8") + b"\nName: \xe9\xff\n")
    assert check_mutant(path) is None


def subprocess_mutants(tmp_path: Path) -> list[Path]:
    """A fixed handful of mutants, half of the tree, half of the text (seeded, not hypothesis)."""
    rng = random.Random(7)
    found = []
    for i in range(SUBPROCESS_RUNS):
        name = EXAMPLES[i % len(EXAMPLES)]
        if i % 2:
            text = text_mutant(name, [(rng.randrange(10**5), "replace", rng.choice(':[{"\t'))])
        else:
            value = rng.choice([None, -1, "🙂", [1, 2], {"a": 1}, 1e300, "x" * 300])
            text = tree_mutant(name, [(rng.randrange(10**4), "replace", value)])
        path = tmp_path / f"mutant{i}.yaml"
        path.write_text(text, encoding="utf-8")
        found.append(path)
    return found


def test_check_config_exits_0_or_2_with_one_config_error_line(tmp_path: Path) -> None:
    outcomes = set()
    for path in subprocess_mutants(tmp_path):
        done = subprocess.run(
            cli_argv("check-config", "-f", str(path)),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **DEMO_ENV},
        )
        assert "Traceback" not in done.stderr, done.stderr
        outcomes.add(done.returncode)
        if done.returncode == 0:
            assert check_mutant(path) is not None
            continue
        assert done.returncode == 2, (done.returncode, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("config error: "), done.stderr
    assert 2 in outcomes  # the mutants were not all harmless
