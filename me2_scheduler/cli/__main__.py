"""``python -m me2_scheduler.cli``: the ``me2-scheduler`` command."""

from me2_scheduler.cli import main

main()
