"""me2-scheduler: the scheduler service of Me2, dispatching avatar actions on time."""

__version__ = "0.1.0"
