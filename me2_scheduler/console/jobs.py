"""The index page's long work: verify, verify-and-repair and rebuild, in the background.

The same functions as ``me2-scheduler verify-index [--repair]`` and
``rebuild-index`` (``ops.index_ops``), run on a thread of the console child,
one job at a time. The page reads the job's progress as it goes (rows or
members done out of the index's size when it started), and the last job's
result stays until the next one starts. Each start and end is logged with
the operator's name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from me2_scheduler.clock import utc_now
from me2_scheduler.errors import RedisIndexError, StoreError
from me2_scheduler.ops.index_ops import Verifier, rebuild, render_report
from me2_scheduler.storage.index import DelayIndex
from me2_scheduler.storage.mysql import MysqlStore

KINDS = {"verify": "verify-index", "repair": "verify-index --repair", "rebuild": "rebuild-index"}

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run of an index command; its fields move while ``running``."""

    kind: str
    operator: str
    started_at: datetime
    expected: int
    phase: str = "starting"
    done: int = 0
    finished_at: datetime | None = None
    result: str = ""
    clean: bool | None = None  # verify: whether the index matched (or was repaired)
    error: str = ""

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def command(self) -> str:
        """The CLI command this job is."""
        return KINDS[self.kind]

    def advance(self, count: int) -> None:
        """Progress callback: ``count`` more rows or members done."""
        self.done += count

    def enter(self, phase: str, expected: int) -> None:
        """Start a new phase of ``expected`` items."""
        self.phase, self.done, self.expected = phase, 0, expected


class IndexJobs:
    """At most one index job at a time, on a daemon thread of this process."""

    def __init__(
        self,
        store: MysqlStore,
        index: DelayIndex,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_rebuilt: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._index = index
        self._clock = clock
        self._on_rebuilt = on_rebuilt
        self._lock = threading.Lock()
        self.last: Job | None = None

    def start(self, kind: str, operator: str) -> Job | None:
        """Start a ``kind`` job (a key of ``KINDS``) for ``operator``; None if one runs.

        Raises KeyError for an unknown kind, RedisIndexError when the index
        cannot be sized.
        """
        if kind not in KINDS:
            raise KeyError(kind)
        with self._lock:
            if self.last is not None and self.last.running:
                return None
            job = Job(kind, operator, self._clock(), self._index.member_count())
            self.last = job
        log.info("console: %s started %s", operator, job.command)
        threading.Thread(target=self._run, args=(job,), name=f"console-{kind}", daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        began = time.monotonic()
        try:
            if job.kind == "rebuild":
                self._rebuild(job)
            else:
                self._verify(job, repair=job.kind == "repair")
        except (StoreError, RedisIndexError) as exc:
            job.error = str(exc)
            log.error("console: %s by %s failed: %s", job.command, job.operator, exc)
        except Exception as exc:  # a job thread must always finish its job
            job.error = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("console: %s by %s crashed", job.command, job.operator)
        finally:
            job.finished_at = self._clock()
        if not job.error:
            took, last = time.monotonic() - began, job.result.splitlines()[-1]
            log.info("console: %s by %s done in %.1fs: %s", job.command, job.operator, took, last)

    def _rebuild(self, job: Job) -> None:
        job.enter("streaming MySQL's active rows into a new due set", job.expected)
        rows = rebuild(self._store, self._index, progress=job.advance)
        if self._on_rebuilt is not None:
            self._on_rebuilt()
        job.result = f"index rebuilt: {rows} active avatars"

    def _verify(self, job: Job, *, repair: bool) -> None:
        verifier = Verifier(self._store, self._index, repair=repair)
        job.enter("checking MySQL's active avatars against Redis", job.expected)
        verifier.check_active(job.advance)
        job.enter("checking Redis's due and inflight against MySQL", verifier.member_count())
        verifier.check_members(job.advance)
        job.result = render_report(verifier.report)
        job.clean = verifier.report.clean
