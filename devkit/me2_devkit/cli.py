"""``me2-dev``: the dev kit's command — ``simulate action|diary``, ``bench``, ``chaos``.

Exit codes as the service's (``me2_scheduler.cli.common``): 0 ok, 1 failure,
2 usage.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """me2-dev: simulators, benchmark and chaos run for me2-scheduler."""


@cli.group("simulate")
def simulate() -> None:
    """Run an Action or Diary simulator (a real gRPC server) for tests and the demo."""


def main() -> None:
    """Console-script entry point."""
    from me2_devkit import bench_cli, chaos_cli, simulate_cli

    simulate_cli.register(simulate)
    chaos_cli.register(cli)
    bench_cli.register(cli)
    cli()


if __name__ == "__main__":
    main()
