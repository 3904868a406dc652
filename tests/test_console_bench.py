"""The console's benchmark scenario runs on a small table and reports every page."""

from __future__ import annotations

from pathlib import Path

from me2_devkit.bench.console import console_pages, pages
from me2_devkit.bench.env import Servers
from me2_devkit.testing.servers import MariaDBServer, RedisServer


def test_every_page_is_timed_and_answers_at_a_small_scale(
    tmp_path: Path, mariadb: MariaDBServer, redis_server: RedisServer
) -> None:
    servers = Servers.around(tmp_path, mariadb, redis_server)
    try:
        figures = console_pages(servers, 10_000, repeats=2)
    finally:
        servers.stop()
    for name in pages(10_000):
        assert 0 < figures[f"console.10k.{name}_ms"] <= figures[f"console.10k.{name}_max_ms"]
    assert figures["console.10k.slowest_max_ms"] == max(
        value for key, value in figures.items() if key.endswith("_max_ms") and "slowest" not in key
    )
