"""Helpers of the config tests: the example files, a minimal valid config, a YAML writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from me2_devkit.testing.configs import write_config

REPO = Path(__file__).resolve().parents[1]
DEV_YAML = REPO / "etc" / "scheduler-dev.yaml"
TEST_YAML = REPO / "etc" / "scheduler-test.yaml"
SEED_DSN = "root:123456@tcp(127.0.0.1:3306)/me2?charset=utf8mb4&parseTime=true"
BASE: dict[str, Any] = {
    "Mysql": {"DataSource": "root:pw@tcp(127.0.0.1:3306)/me2"},
    "ActionRpc": {"Endpoints": ["127.0.0.1:8007"]},
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` deep-merged in; a None value removes the key."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write(tmp_path: Path, content: str | dict[str, Any]) -> Path:
    """A YAML file: raw text as is, a dict merged onto the minimal valid BASE."""
    settings = content if isinstance(content, str) else _merge(BASE, content)
    return write_config(tmp_path / "scheduler.yaml", settings)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real console entry point, in its own interpreter."""
    command = [sys.executable, "-m", "me2_scheduler.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)


def key_paths(tree: Any, prefix: str = "") -> set[str]:
    """Every dotted key path of a parsed YAML mapping, lower-cased."""
    if not isinstance(tree, dict):
        return set()
    paths: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}.{key}".lower() if prefix else str(key).lower()
        paths |= {path} | key_paths(value, path)
    return paths
