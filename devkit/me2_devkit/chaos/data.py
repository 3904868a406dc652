"""The values the audit reads: history rows, schedules, the index, the run's timing."""

from __future__ import annotations

from dataclasses import dataclass, field

from me2_devkit.chaos.injector import FaultWindow
from me2_devkit.chaos.journal import RpcCall


@dataclass(frozen=True)
class Dispatch:
    """One history row; times are epoch seconds (whole seconds, as stored)."""

    id: int
    avatar_id: int
    trigger: str
    planned: float | None
    started: float
    finished: float
    outcome: str
    key: str | None
    recorded: float | None = None  # when MySQL inserted the row, by its own clock


@dataclass(frozen=True)
class Schedule:
    """One ``avatar_schedules`` row, as the audit needs it."""

    avatar_id: int
    status: str
    pause_reason: str | None
    schedule_count: int
    failed_count: int
    next_due: int  # epoch seconds


@dataclass(frozen=True)
class Bounds:
    """The run's timing, from its config."""

    max_interval_s: float
    lease_s: float
    scan_interval_s: float
    sweep_grace_s: float
    poll_interval_s: float
    action_timeout_s: float
    max_failures: int
    min_interval_s: float = 2.0
    retry_s: float = 1.0

    def _recovery(self, wait_s: float) -> float:
        """A sweep, ``wait_s``, a few claims, a dispatch in progress, whole seconds."""
        scan_s, poll_s = self.scan_interval_s, self.poll_interval_s
        return scan_s + wait_s + 4 * poll_s + self.action_timeout_s + 1.0

    @property
    def recovery_s(self) -> float:
        """The recovery bound: how long after an outage (or an inactive span) ends an avatar
        may still wait for its dispatch: a sweep and its grace, a few claims, a dispatch."""
        return self._recovery(self.sweep_grace_s)

    @property
    def recovery_after_s(self) -> float:
        """How soon after a fault ends the service serves and dispatches again: a sweep,
        a lease running out, a few claims, a dispatch in progress, whole seconds."""
        return self._recovery(self.lease_s)

    @property
    def gap_s(self) -> float:
        """The longest allowed gap between two dispatches of an active avatar."""
        return self.max_interval_s + self.lease_s + self.recovery_s


@dataclass(frozen=True)
class IndexSnapshot:
    """The Redis index at the end: due scores and in-flight members."""

    due: dict[int, float]
    inflight: frozenset[int]


@dataclass
class AuditInput:
    """Everything the audit reads, loaded after the run."""

    dispatches: list[Dispatch]
    schedules: dict[int, Schedule]
    calls_per_key: dict[str, int]
    journal: list[RpcCall]
    windows: list[FaultWindow]
    index: IndexSnapshot
    bounds: Bounds
    t_end: float  # the end of observation (epoch seconds)
    # When each key's calls reached Action, by Action's clock (empty: not known).
    arrivals: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Finding:
    """One invariant's figure and violations."""

    key: str
    title: str
    figure: str
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations
