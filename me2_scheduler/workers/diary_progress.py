"""How far a diary run got: its checkpoint, when to save it, and how the run ends.

Plain values only: the monotonic time is passed in and nothing is stored.
``DiaryScheduler`` (``workers.diary``) makes the calls and the writes these
decide on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from me2_scheduler.errors import StoreError
from me2_scheduler.states import DiaryRunResult
from me2_scheduler.storage.diary_runs import Checkpoint, RunClaim, RunKey

CHECKPOINT_EVERY = 100  # avatars between saved checkpoints: the most a crash repeats


class Progress:
    """Which avatars are done while calls finish out of order.

    ``checkpoint`` covers only avatars below which every started one is done,
    with their counts, so a resumed run neither skips an avatar nor counts
    one twice.
    """

    def __init__(self, start: Checkpoint) -> None:
        self.checkpoint = start
        self.unsaved = 0  # avatars the checkpoint moved past since it was last saved
        self._pending: deque[int] = deque()  # started, ascending
        self._outcomes: dict[int, bool] = {}  # finished but not yet under the checkpoint

    def started(self, avatar_id: int) -> None:
        """Note a call started; ids must come in ascending order."""
        self._pending.append(avatar_id)

    def finished(self, avatar_id: int, ok: bool) -> None:
        """Note a call's outcome and move the checkpoint over every leading finished id."""
        self._outcomes[avatar_id] = ok
        cp = self.checkpoint
        success, failure, last = cp.success, cp.failure, cp.avatar_id
        while self._pending and self._pending[0] in self._outcomes:
            last = self._pending.popleft()
            if self._outcomes.pop(last):
                success += 1
            else:
                failure += 1
            self.unsaved += 1
        self.checkpoint = Checkpoint(last, success, failure)


@dataclass
class RunState:
    """The run this process drives: its claim, progress, heartbeat and why it must end."""

    claim: RunClaim
    progress: Progress
    heartbeat_s: float
    next_heartbeat: float  # monotonic seconds
    skipped: bool = False  # there was no active avatar
    exhausted: bool = False  # every active avatar was started
    lost: bool = False  # another process took the run over
    query_error: StoreError | None = None  # listing the active avatars failed
    key: RunKey = field(init=False)
    date_text: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.claim.run.key
        self.date_text = self.key.run_date.isoformat()

    @classmethod
    def begin(cls, claim: RunClaim, heartbeat_s: float, now: float) -> RunState:
        """The state of ``claim`` as it starts at monotonic ``now``, from its checkpoint."""
        return cls(claim, Progress(claim.run.checkpoint), heartbeat_s, now + heartbeat_s)

    @property
    def can_start(self) -> bool:
        """True while another avatar's call may start."""
        return not (self.exhausted or self.lost or self.query_error)

    def save_due(self, now: float) -> bool:
        """True (and the next heartbeat timed from ``now``) when the checkpoint is to be saved.

        Due every ``CHECKPOINT_EVERY`` avatars, and at every heartbeat.
        """
        due = self.progress.unsaved >= CHECKPOINT_EVERY or now >= self.next_heartbeat
        if due:
            self.next_heartbeat = now + self.heartbeat_s
        return due

    def saved(self, owned: bool) -> None:
        """Note a save went through; ``owned`` False: the run was taken over."""
        self.progress.unsaved = 0
        if not owned:
            self.lost = True

    def ending(self) -> DiaryRunResult:
        """How the run ends, if its final write goes through.

        ``lost`` (nothing to write), ``failed`` (mark the row failed),
        ``stopped`` (release the row) or ``done``/``skipped`` (finish it).
        """
        if self.lost:
            return DiaryRunResult.LOST
        if self.query_error is not None:
            return DiaryRunResult.FAILED
        if not self.exhausted:  # stopped by SIGTERM: a restart resumes at once
            return DiaryRunResult.STOPPED
        return DiaryRunResult.SKIPPED if self.skipped else DiaryRunResult.DONE


@dataclass(frozen=True)
class RunResult:
    """What one claimed run did here, its checkpoint, and whether it resumed an earlier one."""

    key: RunKey
    result: DiaryRunResult
    checkpoint: Checkpoint
    resumed: bool
