"""Service configs for test stacks: go-zero YAML written from plain settings.

The tests, the benchmark and the chaos run each start ``me2-scheduler`` on
their own loopback servers; they describe its config as a mapping of the
YAML's own keys (``Mysql``, ``Schedule``, ...) and write it here, so the
shape every stack shares is built in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SERVICE_NAME = "scheduler.rpc"  # the seed's Name


def service_config(
    *,
    data_source: str,
    redis_host: str,
    redis_key: str,
    action: str | None = None,
    listen_on: str = "127.0.0.1:8008",
    mode: str = "test",
    timezone: str = "UTC",
    **sections: Any,
) -> dict[str, Any]:
    """The settings of a service on test servers, by YAML key.

    ``action`` is the Action endpoint (else ``sections`` name ``ActionRpc``);
    each keyword of ``sections`` adds a top-level section or replaces one
    whole (``Mysql={...}``).
    """
    settings: dict[str, Any] = {
        "Name": SERVICE_NAME,
        "Mode": mode,
        "ListenOn": listen_on,
        "Timezone": timezone,
        "Mysql": {"DataSource": data_source},
        "Redis": {"Host": redis_host, "Key": redis_key},
    }
    if action is not None:
        settings["ActionRpc"] = {"Endpoints": [action]}
    settings.update(sections)
    return settings


def write_config(path: Path, settings: Mapping[str, Any] | str) -> Path:
    """Write ``settings`` (or YAML text as it is) to ``path``; return the path."""
    text = settings if isinstance(settings, str) else config_yaml(settings)
    path.write_text(text, encoding="utf-8")
    return path


def config_yaml(settings: Mapping[str, Any]) -> str:
    """``settings`` as YAML, keys in the order given."""
    return yaml.safe_dump(dict(settings), sort_keys=False, allow_unicode=True)
