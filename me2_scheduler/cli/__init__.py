"""The ``me2-scheduler`` command line: the service and its operator commands.

One module per command family, each exporting its click commands:
``service`` (check-config, init-db, run), ``ops`` (rebuild-index,
verify-index, status, prune-history), ``avatar`` (one avatar through the
gRPC API), ``policy`` (scheduling policies: ``avatar policy get|set``,
``policy preview|set-many``) and ``diary`` (run-now, status); ``common`` holds the exit codes,
shared options and the one-line failures. Command bodies import their
modules lazily, so ``--help`` stays fast and no command pays for another's
imports. The benchmark, chaos run and simulators are the dev kit's
(``me2-dev``), not part of the service.
"""

from __future__ import annotations

import click

from me2_scheduler.cli import avatar, diary, ops, policy, service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="me2-scheduler")
def cli() -> None:
    """me2-scheduler: dispatches Me2 avatar actions and diaries on time."""


for _command in (*service.COMMANDS, *ops.COMMANDS, avatar.avatar, policy.policy, diary.diary):
    cli.add_command(_command)
avatar.avatar.add_command(policy.avatar_policy)


def main() -> None:
    """Console-script entry point."""
    cli()
