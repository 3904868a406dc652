"""The wheel ships the service only; the dev kit (test servers, simulators,
benchmark, chaos run) stays beside it, with its own ``me2-dev`` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from me2_devkit.cli import cli as dev_cli
from me2_devkit.cli import main as dev_main
from me2_scheduler.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SERVICE_COMMANDS = {"check-config", "init-db", "run"}
OPERATOR_COMMANDS = {
    "rebuild-index",
    "verify-index",
    "status",
    "prune-history",
    "avatar",
    "policy",
    "diary",
}
DEV_KIT_PARTS = ("bench", "chaos", "testing", "simulators", "me2_devkit", "simulate")
# The simulators, their control client and their Control service's protos (``simulator.proto``,
# ``simulator_pb2*``): every module or file named so is the dev kit's.
DEV_KIT_NAME = "simulator"
# What a checkout holds besides its sources: a stale ``build/`` would add what it kept.
SCRATCH = ("build", "dist", "*.egg-info", ".git", ".venv", ".run", "__pycache__", ".*cache*")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel ``make build`` builds, from a clean copy of this checkout."""
    source = tmp_path_factory.mktemp("source") / "me2-scheduler"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SCRATCH))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("me2_scheduler-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_no_dev_kit_code(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "me2_scheduler/dispatch.py" in names or "me2_scheduler/policy.py" in names
    leaked = [n for n in names if any(part in n.split("/")[1:] for part in DEV_KIT_PARTS)]
    leaked += [n for n in names if n.startswith("me2_devkit/") or DEV_KIT_NAME in n]
    assert leaked == []


def test_the_wheel_ships_the_lua_scripts_and_migrations(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert any(n.startswith("me2_scheduler/storage/lua/") and n.endswith(".lua") for n in names)
    assert "me2_scheduler/storage/migrations/001_seed.sql" in names


def test_the_wheel_installs_only_the_service_command(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    scripts = wheel.read(entry_points).decode()
    assert "me2-scheduler = me2_scheduler.cli:main" in scripts
    assert "me2-dev" not in scripts


def test_the_service_command_lists_only_service_and_operator_commands() -> None:
    assert set(cli.commands) == SERVICE_COMMANDS | OPERATOR_COMMANDS
    listed = CliRunner().invoke(cli, ["--help"]).output
    for name in ("simulate", "bench", "chaos"):
        assert f"  {name} " not in listed


def test_the_dev_kit_command_runs_the_simulators_benchmark_and_chaos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["me2-dev", "--help"])
    with pytest.raises(SystemExit) as done:
        dev_main()
    assert done.value.code == 0
    assert {"simulate", "bench", "chaos"} <= set(dev_cli.commands)
