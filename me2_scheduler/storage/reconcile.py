"""Keeping the Redis index in step with MySQL: rebuild, sweep, verify and repair.

MySQL is the truth; the index can be rebuilt from it at any time (DESIGN
§2.2, §2.3). Everything that reads MySQL's active rows to build or check the
index lives here, for the service (the poller's sweep, the preflight
rebuild), the operator commands and the benchmarks alike:

- ``rebuild``: stream every active row into a new due set, swapped in at once;
- ``sweep`` (§3.4): re-add active avatars overdue by more than a grace period
  and absent from both sets; a missing ``meta`` means a full rebuild instead;
- ``Verifier``: compare both sides in chunks, so a million avatars are never
  held in memory at once:

  1. MySQL's active rows, in avatar_id order; each chunk is looked up in Redis
     (due and inflight read at one instant) → *missing* (active, in neither
     set) and *wrong-score* (in ``due`` at another time than MySQL's);
  2. the members of ``due`` and ``inflight``; each chunk is looked up in
     MySQL → *extra* (in a set, not active).

  An in-flight avatar counts as present and its score (a lease expiry) is not
  checked. The service may be running meanwhile, so a difference seen in a
  chunk may be a write in progress (MySQL is written before Redis): every
  suspect is read again from both sides before it is counted, just before it
  is repaired, and once more after, to tell whether the repair held.

Nothing here counts metrics: each function returns what it did, and the
caller counts. Every function raises StoreError or RedisIndexError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from me2_scheduler.chunking import chunks
from me2_scheduler.clock import epoch, from_epoch
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore

REBUILD_CHUNK = 10_000  # rows per MySQL fetch and per Redis pipeline while rebuilding
SWEEP_PAGE = 1000  # overdue rows per MySQL page while sweeping
VERIFY_CHUNK = 5000  # avatars per MySQL/Redis round trip while verifying
DEFAULT_SAMPLE = 10

MISSING, EXTRA, WRONG_SCORE = "missing", "extra", "wrong_score"
KINDS = (MISSING, EXTRA, WRONG_SCORE)

_Progress = Callable[[int], None] | None  # gets how many items were just done


def active_due(store: MysqlStore, chunk: int = REBUILD_CHUNK) -> Iterator[tuple[int, int]]:
    """Every active ``(avatar_id, due epoch seconds)`` in avatar_id order, streamed."""
    return ((avatar_id, epoch(due)) for avatar_id, due in store.stream_active(chunk))


def rebuild(
    store: MysqlStore,
    index: DelayIndex,
    *,
    chunk: int = REBUILD_CHUNK,
    progress: _Progress = None,
) -> int:
    """Replace the index with MySQL's active rows, streamed; return the row count.

    The new ``due`` set is swapped in at once (``DelayIndex.rebuild``), so the
    service may keep running. ``progress`` gets how many rows were just done.
    """
    return index.rebuild(active_due(store, chunk), chunk=chunk, progress=progress)


@dataclass(frozen=True)
class Swept:
    """What one sweep did: the rows of a full rebuild (None: none), or the avatars re-added."""

    rebuilt: int | None = None
    repaired: list[int] = field(default_factory=list)


def sweep(store: MysqlStore, index: DelayIndex, grace_s: float, page: int = SWEEP_PAGE) -> Swept:
    """Re-add active avatars overdue by more than ``grace_s`` and absent from Redis.

    Rebuilds the whole index instead when its ``meta`` is gone. An avatar that
    reappeared meanwhile keeps its place (only an absent one is written).
    """
    if not index.has_meta():
        return Swept(rebuilt=rebuild(store, index))
    before = from_epoch(index.now() - grace_s)
    repaired: list[int] = []
    after_id = 0
    while rows := store.overdue(before, limit=page, after_id=after_id):
        due_by_id = {avatar_id: epoch(due) for avatar_id, due in rows}
        for avatar_id in index.absent(list(due_by_id)):
            if index.put_due(avatar_id, due_by_id[avatar_id], only_if_absent=True):
                repaired.append(avatar_id)
        after_id = rows[-1][0]
    return Swept(repaired=repaired)


def classify(mysql_due: int | None, due_score: float | None, inflight: bool) -> str | None:
    """What is wrong with one avatar's place in the index, or None when nothing is.

    ``mysql_due`` is MySQL's next time (epoch s) when the avatar is active,
    None when it is not (or has no row); ``due_score`` its score in ``due``
    (None: not there); ``inflight`` whether it holds a lease.
    """
    if mysql_due is None:
        return EXTRA if due_score is not None or inflight else None
    if inflight:
        return None
    if due_score is None:
        return MISSING
    return WRONG_SCORE if due_score != mysql_due else None


@dataclass
class Finding:
    """One kind of difference: how many, the first ``sample`` ids, how many a repair left."""

    count: int = 0
    sample: list[int] = field(default_factory=list)
    unrepaired: int = 0

    def note(self, avatar_id: int, sample_size: int) -> None:
        self.count += 1
        if len(self.sample) < sample_size:
            self.sample.append(avatar_id)

    @property
    def repaired(self) -> int:
        return self.count - self.unrepaired


@dataclass
class Report:
    """What a verification found (and, with ``repair``, what it could not fix)."""

    repair: bool
    checked_active: int = 0
    checked_members: int = 0
    findings: dict[str, Finding] = field(default_factory=lambda: {k: Finding() for k in KINDS})

    @property
    def differences(self) -> int:
        """How many differences were found."""
        return sum(finding.count for finding in self.findings.values())

    @property
    def remaining(self) -> int:
        """Differences still there: all of them without repair, the unrepaired ones with it."""
        if not self.repair:
            return self.differences
        return sum(finding.unrepaired for finding in self.findings.values())

    @property
    def clean(self) -> bool:
        return self.remaining == 0

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values, for ``--json``."""
        out: dict[str, Any] = {
            "clean": self.clean,
            "repair": self.repair,
            "differences": self.differences,
            "remaining": self.remaining,
            "checked": {"active": self.checked_active, "members": self.checked_members},
        }
        for kind, finding in self.findings.items():
            repaired = finding.repaired if self.repair else 0
            out[kind] = {"count": finding.count, "sample": finding.sample, "repaired": repaired}
        return out


_Wrong = dict[int, tuple[str, int | None]]  # avatar_id -> (kind, MySQL due epoch or None)


class Verifier:
    """One verification (and optional repair) of the index against MySQL."""

    def __init__(
        self,
        store: MysqlStore,
        index: DelayIndex,
        *,
        repair: bool = False,
        sample: int = DEFAULT_SAMPLE,
        chunk: int = VERIFY_CHUNK,
    ) -> None:
        self.store = store
        self.index = index
        self.sample = sample
        self.chunk = chunk
        self.report = Report(repair=repair)
        self._extras_seen: set[int] = set()  # a scan may return a member twice

    def run(self, active_progress: _Progress = None, member_progress: _Progress = None) -> Report:
        """Both passes: MySQL's active rows against Redis, then Redis's members against MySQL."""
        self.check_active(active_progress)
        self.check_members(member_progress)
        return self.report

    def check_active(self, progress: _Progress = None) -> None:
        """Find (and repair) active avatars missing from Redis or in due at a wrong time."""
        for batch in chunks(active_due(self.store, self.chunk), self.chunk):
            places = self.index.places([avatar_id for avatar_id, _ in batch])
            suspects = [
                avatar_id
                for (avatar_id, mysql_due), (score, leased) in zip(batch, places, strict=True)
                if classify(mysql_due, score, leased) is not None
            ]
            self._settle(suspects, (MISSING, WRONG_SCORE))
            self.report.checked_active += len(batch)
            if progress is not None:
                progress(len(batch))

    def check_members(self, progress: _Progress = None) -> None:
        """Find (and repair) members of due or inflight that are not active in MySQL."""
        for batch in chunks(self.index.members(), self.chunk):
            active = self.store.active_among(batch)
            suspects = [a for a in batch if a not in active and a not in self._extras_seen]
            self._settle(suspects, (EXTRA,))
            self.report.checked_members += len(batch)
            if progress is not None:
                progress(len(batch))

    def member_count(self) -> int:
        """How many members ``check_members`` will scan (due + inflight, now)."""
        return self.index.member_count()

    def _examine(self, ids: list[int]) -> _Wrong:
        """Fresh reads of both sides: the kind and MySQL due epoch of each wrong one."""
        active = {a: epoch(due) for a, due in self.store.active_due_times(ids).items()}
        found: _Wrong = {}
        for avatar_id, (score, leased) in zip(ids, self.index.places(ids), strict=True):
            kind = classify(active.get(avatar_id), score, leased)
            if kind is not None:
                found[avatar_id] = (kind, active.get(avatar_id))
        return found

    def _settle(self, suspects: list[int], kinds: tuple[str, ...]) -> None:
        """Count the suspects still wrong in one of ``kinds``; repair them if asked."""
        if not suspects:
            return
        wrong = {a: v for a, v in self._examine(suspects).items() if v[0] in kinds}
        for avatar_id, (kind, _) in sorted(wrong.items()):
            self.report.findings[kind].note(avatar_id, self.sample)
            if kind == EXTRA:
                self._extras_seen.add(avatar_id)
        if not self.report.repair or not wrong:
            return
        repair(self.index, wrong)
        for avatar_id, (kind, _) in self._examine(list(wrong)).items():
            if wrong[avatar_id][0] == kind:
                self.report.findings[kind].unrepaired += 1


def repair(index: DelayIndex, wrong: _Wrong) -> None:
    """Put each wrong avatar where MySQL says.

    Missing: added at MySQL's time unless present by now; wrong score: moved
    (an in-flight avatar is skipped, its worker settles it); extra: removed.
    """
    missing = [(a, due) for a, (kind, due) in wrong.items() if kind == MISSING and due is not None]
    moved = [
        (a, due) for a, (kind, due) in wrong.items() if kind == WRONG_SCORE and due is not None
    ]
    if missing:
        index.put_due_many(missing, only_if_absent=True)
    if moved:
        index.put_due_many(moved)
    for avatar_id, (kind, _) in wrong.items():
        if kind == EXTRA:
            index.remove(avatar_id)
