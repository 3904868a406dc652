"""One error hierarchy for the service; driver errors are translated at the boundary."""

from __future__ import annotations

import grpc


class SchedulerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(SchedulerError):
    """An invalid configuration value; ``key`` is its dotted path (``Schedule.MaxWorkers``)."""

    def __init__(self, key: str, problem: str) -> None:
        # One line whatever the problem quotes (a YAML error's context, a value
        # with a newline or U+2028): the CLI prints exactly one line.
        problem = " ".join(problem.split())
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class StoreError(SchedulerError):
    """MySQL failed or is unreachable."""


class SchemaBehindError(StoreError):
    """The database schema is older than this release; run ``init-db``."""


class RedisIndexError(SchedulerError):
    """Redis failed or is unreachable."""


class DownstreamError(SchedulerError):
    """The Action or Diary service failed or did not answer in time.

    ``unavailable``: the service could not be reached or answered too late
    (503, retried later). ``code``: the gRPC status of a failed call, None
    when the service answered with an error result of its own.
    """

    def __init__(
        self, message: str, *, unavailable: bool = False, code: grpc.StatusCode | None = None
    ) -> None:
        super().__init__(message)
        self.unavailable = unavailable
        self.code = code
