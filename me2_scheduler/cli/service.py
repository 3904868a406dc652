"""The service's own commands: ``check-config``, ``init-db`` and ``run``."""

from __future__ import annotations

import sys

import click

from me2_scheduler.cli.common import config_option, fail, load_or_exit
from me2_scheduler.errors import SchedulerError


@click.command("check-config")
@config_option
def check_config(config_path: str) -> None:
    """Validate a config and print the effective values (secrets masked)."""
    from me2_scheduler.config import describe

    click.echo(describe(load_or_exit(config_path)))


@click.command("init-db")
@config_option
def init_db(config_path: str) -> None:
    """Apply the schema migrations the database is missing (idempotent)."""
    from me2_scheduler.storage.migrations import apply_migrations

    config = load_or_exit(config_path)
    try:
        applied = apply_migrations(config.mysql)
    except SchedulerError as exc:
        fail(exc)
    for version in applied:
        click.echo(f"applied migration {version}")
    click.echo("schema up to date" if not applied else f"{len(applied)} migration(s) applied")


@click.command("run")
@config_option
def run(config_path: str) -> None:
    """Run the service: supervisor, poller, workers, rpc_server and diary."""
    from me2_scheduler.supervisor.arbiter import run_service

    sys.exit(run_service(load_or_exit(config_path)))


COMMANDS = (check_config, init_db, run)
