"""The supervisor's table of child slots: which process holds each, restart backoff, stop stages.

Bookkeeping only, over the monotonic times the caller passes in: nothing here
forks, signals or waits (``arbiter`` does), so every decision is tested
without a process.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from me2_scheduler.supervisor.roles import RoleSpec

RESTART_DELAY_INITIAL = 0.5  # seconds before the first restart of a slot
RESTART_DELAY_MAX = 30.0  # the doubling stops here
RESTART_HEALTHY_AFTER = 60.0  # a child that ran this long restarts at the initial delay again


@dataclass(frozen=True)
class Backoff:
    """Per-slot restart delay: ``initial`` doubling up to ``cap``; reset after a healthy run."""

    initial: float = RESTART_DELAY_INITIAL
    cap: float = RESTART_DELAY_MAX
    healthy_after: float = RESTART_HEALTHY_AFTER

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        """The delay before the next restart of a slot whose last delay was ``previous``."""
        if previous is None or ran_for >= self.healthy_after:
            return self.initial
        return min(previous * 2, self.cap)


@dataclass
class Slot:
    """One child position (``worker[3]``) and the state of its current process."""

    role: RoleSpec
    index: int
    with_context: bool = True  # False: the target is called as f(config) (the preflight)
    pid: int | None = None
    started_at: float = 0.0
    delay: float | None = None  # the last restart delay used
    restart_at: float | None = None  # monotonic time of the pending restart
    status: int | None = None  # the last wait status

    @property
    def label(self) -> str:
        """``role[index]``, as in process titles and log lines."""
        return f"{self.role.name}[{self.index}]"


def describe_status(status: int) -> str:
    """``exited with code N`` or ``killed by SIGNAME`` for a ``waitpid`` status."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(signum).name}"
        except ValueError:
            return f"killed by signal {signum}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def stop_stages(slots: Sequence[Slot]) -> Iterator[list[Slot]]:
    """The live slots of each stop stage, lowest ``stop_order`` first.

    Each stage is read when the caller asks for it, so a child that died
    during an earlier stage is not in a later one.
    """
    for order in sorted({s.role.stop_order for s in slots}):
        yield [s for s in slots if s.role.stop_order == order and s.pid is not None]


class SlotTable:
    """Every slot of the service, the live processes by pid, and restarts per role name."""

    def __init__(self, roles: Sequence[RoleSpec], backoff: Backoff) -> None:
        self.slots = [Slot(role, i) for role in roles for i in range(role.count)]
        self.backoff = backoff
        self.restarts: Counter[str] = Counter()
        self._by_pid: dict[int, Slot] = {}

    @property
    def role_names(self) -> set[str]:
        """The names of the roles with at least one slot."""
        return {slot.role.name for slot in self.slots}

    def started(self, slot: Slot, pid: int, now: float) -> None:
        """Note that ``pid`` now runs ``slot`` (any slot, also one outside the table)."""
        slot.pid, slot.started_at, slot.restart_at = pid, now, None
        self._by_pid[pid] = slot

    def exited(self, pid: int, status: int) -> Slot | None:
        """The slot ``pid`` ran, now marked exited with ``status``; None for a stranger."""
        slot = self._by_pid.pop(pid, None)
        if slot is not None:
            slot.pid, slot.status = None, status
        return slot

    def live(self) -> list[Slot]:
        """Every slot with a process the supervisor has not reaped yet."""
        return list(self._by_pid.values())

    def forget_all(self) -> None:
        """Drop every process still known (after the final reap found no child left)."""
        self._by_pid.clear()

    def schedule_restart(self, slot: Slot, now: float) -> float:
        """Count a restart of ``slot`` and time it by the backoff; return the delay."""
        slot.delay = self.backoff.next_delay(slot.delay, now - slot.started_at)
        slot.restart_at = now + slot.delay
        self.restarts[slot.role.name] += 1
        return slot.delay

    def due(self, now: float) -> list[Slot]:
        """The slots without a process whose restart time has come."""
        return [
            s
            for s in self.slots
            if s.pid is None and s.restart_at is not None and s.restart_at <= now
        ]

    def next_timeout(self, now: float, tick: float) -> float:
        """How long the loop may sleep: ``tick``, or less when a restart is due sooner."""
        pending = [s.restart_at - now for s in self.slots if s.restart_at is not None]
        return min([tick, *pending])

    def down(self) -> list[str]:
        """The labels of the slots without a process (read from another thread too)."""
        return [slot.label for slot in list(self.slots) if slot.pid is None]
