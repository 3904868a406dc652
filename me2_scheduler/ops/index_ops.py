"""Rebuild the Redis index from MySQL, and verify (and repair) it against MySQL.

Verification streams both sides in chunks, so a million avatars are never
held in memory at once:

1. MySQL's active rows, in avatar_id order; each chunk is looked up in Redis
   (ZMSCORE on ``due`` and ``inflight`` in one MULTI, so an avatar moving
   between the sets is never seen in neither) → *missing* (active, in
   neither set) and *wrong-score* (in ``due`` at another time than MySQL's);
2. the members of ``due`` and ``inflight`` by ZSCAN; each chunk is looked up
   in MySQL → *extra* (in a set, not active).

An in-flight avatar counts as present and its score (a lease expiry) is not
checked. The service may be running meanwhile, so a difference seen in a
chunk may be a write in progress (MySQL is written before Redis): every
suspect is read again from both sides before it is counted, just before it
is repaired, and once more after, to tell whether the repair held.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from redis.exceptions import RedisClusterException, RedisError

from me2_scheduler.errors import RedisIndexError
from me2_scheduler.ops import Progress
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore

MISSING, EXTRA, WRONG_SCORE = "missing", "extra", "wrong_score"
KINDS = (MISSING, EXTRA, WRONG_SCORE)
CHUNK = 5000  # avatars per MySQL/Redis round trip while verifying
SCAN_COUNT = 5000  # ZSCAN's COUNT hint
DEFAULT_SAMPLE = 10

_T = TypeVar("_T")


def _epoch(moment: datetime) -> int:
    """Whole epoch seconds: the index's score for a ``next_schedule_time``."""
    return int(moment.timestamp())


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@contextlib.contextmanager
def _redis_errors(action: str) -> Iterator[None]:
    """Turn redis-py errors raised inside into ``RedisIndexError`` (as ``DelayIndex`` does)."""
    try:
        yield
    except (RedisError, RedisClusterException) as exc:
        raise RedisIndexError(f"redis {action}: {exc}") from None


def rebuild(
    store: MysqlStore, index: DelayIndex, *, chunk: int = 10_000, progress: Progress | None = None
) -> int:
    """Replace the index with MySQL's active rows, streamed; return the row count.

    The new ``due`` set is swapped in at once (``DelayIndex.rebuild``), so the
    service may keep running. Raises StoreError or RedisIndexError.
    """
    rows = ((avatar_id, _epoch(due)) for avatar_id, due in store.stream_active(chunk))
    done = 0

    def step(total: int) -> None:
        nonlocal done
        if progress is not None:
            progress(total - done)
        done = total

    return index.rebuild(rows, chunk=chunk, progress=step)


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
            "clean": self.clean, "repair": self.repair, "differences": self.differences,
            "remaining": self.remaining,
            "checked": {"active": self.checked_active, "members": self.checked_members},
        }  # fmt: skip
        for kind, finding in self.findings.items():
            repaired = finding.count - finding.unrepaired if self.repair else 0
            out[kind] = {"count": finding.count, "sample": finding.sample, "repaired": repaired}
        return out


class Verifier:
    """One verification (and optional repair) of the index against MySQL.

    Every method raises StoreError or RedisIndexError.
    """

    def __init__(
        self,
        store: MysqlStore,
        index: DelayIndex,
        *,
        repair: bool = False,
        sample: int = DEFAULT_SAMPLE,
        chunk: int = CHUNK,
    ) -> None:
        self.store = store
        self.index = index
        self.sample = sample
        self.chunk = chunk
        self.report = Report(repair=repair)
        self._extras_seen: set[int] = set()  # ZSCAN may return a member twice

    def run(
        self, active_progress: Progress | None = None, member_progress: Progress | None = None
    ) -> Report:
        """Both passes: MySQL's active rows against Redis, then Redis's members against MySQL."""
        self.check_active(active_progress)
        self.check_members(member_progress)
        return self.report

    def check_active(self, progress: Progress | None = None) -> None:
        """Find (and repair) active avatars missing from Redis or in due at a wrong time."""
        rows = ((a, _epoch(due)) for a, due in self.store.stream_active(self.chunk))
        for batch in _chunks(rows, self.chunk):
            ids = [avatar_id for avatar_id, _ in batch]
            due, inflight = self._index_state(ids)
            suspects = [
                avatar_id
                for (avatar_id, mysql_due), score, leased in zip(batch, due, inflight, strict=True)
                if classify(mysql_due, score, leased) is not None
            ]
            self._settle(suspects, (MISSING, WRONG_SCORE))
            self.report.checked_active += len(batch)
            if progress is not None:
                progress(len(batch))

    def check_members(self, progress: Progress | None = None) -> None:
        """Find (and repair) members of due or inflight that are not active in MySQL."""
        for key in (self.index.keys.due, self.index.keys.inflight):
            for batch in _chunks(self._scan(key), self.chunk):
                active = self.store.active_among(batch)
                suspects = [a for a in batch if a not in active and a not in self._extras_seen]
                self._settle(suspects, (EXTRA,))
                self.report.checked_members += len(batch)
                if progress is not None:
                    progress(len(batch))

    def member_count(self) -> int:
        """How many members ``check_members`` will scan (due + inflight, now)."""
        keys = self.index.keys
        with _redis_errors("counting the index"):
            pipe = self.index.client.pipeline(transaction=False)
            pipe.zcard(keys.due)
            pipe.zcard(keys.inflight)
            return sum(pipe.execute())

    def _scan(self, key: str) -> Iterator[int]:
        with _redis_errors(f"scanning {key}"):
            for member, _score in self.index.client.zscan_iter(key, count=SCAN_COUNT):
                if not member.isdigit():  # only a foreign writer could have put it there
                    raise RedisIndexError(f"{key} holds {member!r}, which is not an avatar_id")
                yield int(member)

    def _index_state(self, ids: list[int]) -> tuple[list[float | None], list[bool]]:
        """Each avatar's due score (None: absent) and whether it is in flight, at one instant."""
        keys = self.index.keys
        with _redis_errors("reading the index"):
            pipe = self.index.client.pipeline(transaction=True)
            pipe.zmscore(keys.due, ids)
            pipe.zmscore(keys.inflight, ids)
            due, inflight = pipe.execute()
        return due, [score is not None for score in inflight]

    def _examine(self, ids: list[int]) -> dict[int, tuple[str, int | None]]:
        """Fresh reads of both sides: ``{avatar_id: (kind, MySQL due epoch)}`` of the wrong ones."""
        active = {a: _epoch(due) for a, due in self.store.active_due_times(ids).items()}
        due, inflight = self._index_state(ids)
        found: dict[int, tuple[str, int | None]] = {}
        for avatar_id, score, leased in zip(ids, due, inflight, strict=True):
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
        self._repair(wrong)
        for avatar_id, (kind, _) in self._examine(list(wrong)).items():
            if wrong[avatar_id][0] == kind:
                self.report.findings[kind].unrepaired += 1

    def _repair(self, wrong: dict[int, tuple[str, int | None]]) -> None:
        """Missing: add at MySQL's time unless present by now; wrong score: move (an
        in-flight avatar is skipped, its worker settles it); extra: remove."""
        missing = [
            (a, due) for a, (kind, due) in wrong.items() if kind == MISSING and due is not None
        ]
        moved = [
            (a, due) for a, (kind, due) in wrong.items() if kind == WRONG_SCORE and due is not None
        ]
        if missing:
            self.index.schedule_many(missing, only_if_absent=True)
        if moved:
            self.index.schedule_many(moved)
        for avatar_id, (kind, _) in wrong.items():
            if kind == EXTRA:
                self.index.remove(avatar_id)


_LABELS = {MISSING: "missing", EXTRA: "extra", WRONG_SCORE: "wrong score"}


def render_report(report: Report) -> str:
    """The report as text: what was checked, one line per kind, then the verdict."""
    lines = [
        f"checked {report.checked_active} active avatars in MySQL"
        f" and {report.checked_members} members of due/inflight in Redis"
    ]
    for kind in KINDS:
        finding = report.findings[kind]
        line = f"  {_LABELS[kind]:<12} {finding.count}"
        if finding.sample:
            line += "  e.g. " + ", ".join(str(avatar_id) for avatar_id in finding.sample)
        if report.repair and finding.count:
            line += f"  (repaired {finding.count - finding.unrepaired})"
        lines.append(line)
    lines.append(_verdict(report))
    return "\n".join(lines)


def _verdict(report: Report) -> str:
    if report.differences == 0:
        return "the index matches MySQL"
    if not report.repair:
        return f"{report.differences} difference(s); run with --repair to fix them"
    if report.clean:
        return f"{report.differences} difference(s) repaired"
    return f"{report.remaining} of {report.differences} difference(s) remain after repair"
