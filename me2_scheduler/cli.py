"""The ``me2-scheduler`` command line.

Exit codes are a contract: 0 ok, 1 operational failure (a server unreachable),
2 usage or config error. A config error prints one line
``config error: <key.path>: <problem>`` to stderr, never a traceback.
Command bodies live in their own modules and are imported lazily, so
``--help`` stays fast and no command pays for another's imports.
"""

from __future__ import annotations

import sys

import click

from me2_scheduler.errors import ConfigError, SchedulerError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

config_option = click.option(
    "-f",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Service YAML config (go-zero shape).",
)


def load_or_exit(path: str):
    """Load the config or exit 2 with the one-line ``config error:`` message."""
    from me2_scheduler.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def fail(exc: Exception, code: int = EXIT_FAILURE) -> None:
    """Print one line for an operational failure and exit."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="me2-scheduler")
def cli() -> None:
    """me2-scheduler: dispatches Me2 avatar actions and diaries on time."""


@cli.command("check-config")
@config_option
def check_config(config_path: str) -> None:
    """Validate a config and print the effective values (secrets masked)."""
    from me2_scheduler.config import describe

    click.echo(describe(load_or_exit(config_path)))


@cli.command("init-db")
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


@cli.command("run")
@config_option
def run(config_path: str) -> None:
    """Run the service: supervisor, poller, workers, rpc_server and diary."""
    from me2_scheduler.supervisor.arbiter import run_service

    sys.exit(run_service(load_or_exit(config_path)))


@cli.group("simulate")
def simulate() -> None:
    """Run an Action or Diary simulator (a real gRPC server) for tests and the demo."""


def main() -> None:
    """Console-script entry point."""
    from me2_scheduler import bench_cli, chaos_cli, diary_cli, ops_cli, simulators  # subcommands

    simulators.register(simulate)
    diary_cli.register(cli)
    ops_cli.register(cli)
    chaos_cli.register(cli)
    bench_cli.register(cli)
    cli()


if __name__ == "__main__":
    main()
