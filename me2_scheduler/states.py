"""Every state name the service stores or reports, one ``StrEnum`` per idea.

The values are what the columns hold and the API, logs and metrics show
(``avatar_schedules.status``, ``avatar_schedule_history.outcome`` and
``trigger``, ``diary_runs.status``), so a member compares and formats as its
value: ``Status.ACTIVE == "active"`` and ``f"{Status.ACTIVE}"`` is ``active``.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """``enum.StrEnum`` of Python 3.11: members are their string values."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


class Status(StrEnum):
    """``avatar_schedules.status``: the seed's three states."""

    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class PauseReason(StrEnum):
    """``avatar_schedules.pause_reason``: who paused a paused schedule."""

    USER = "user"
    FAILURES = "failures"


class Outcome(StrEnum):
    """``avatar_schedule_history.outcome`` and ``scheduler_dispatch_total{result}``."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"


class Trigger(StrEnum):
    """``avatar_schedule_history.trigger``: what started a dispatch."""

    AUTO = "auto"  # the poller claimed a due slot
    MANUAL = "manual"  # TriggerSchedule


class DiaryRunStatus(StrEnum):
    """``diary_runs.status``: where a run stands in MySQL, whoever runs it."""

    RUNNING = "running"  # claimed; its owner heartbeats (NULL heartbeat: released at shutdown)
    DONE = "done"  # finished: every active avatar was handled (or there was none)
    FAILED = "failed"  # listing the active avatars failed; another process may resume it


class DiaryRunResult(StrEnum):
    """How one attempt at a run ended in the process that made it (CLI, logs, metrics).

    ``scheduler_diary_runs_total{result}``. An attempt is made only after a
    claim: a run found done, or live in another process, gives no result.
    """

    DONE = "done"  # every active avatar was handled; the row is done
    SKIPPED = "skipped"  # there was no active avatar; the row is done, with nothing called
    STOPPED = "stopped"  # the service is stopping; released, it resumes from its checkpoint
    LOST = "lost"  # another process took the run over (this one's heartbeat went stale)
    FAILED = "failed"  # listing avatars failed, or the final write did not go through
