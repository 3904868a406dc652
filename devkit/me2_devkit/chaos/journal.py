"""The RPC journal: every call the chaos run makes, with when it was sent, when it returned
and what it answered; and the burst of pause/resume/trigger calls on random avatars.

A state-changing call (enable, pause, resume) also notes the avatar's highest
history id just before it was sent and just after it returned, so the audit
can place the change among the avatar's dispatches: if the two are equal, no
dispatch was recorded meanwhile and the order is certain.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pymysql

from me2_scheduler.protos import scheduler_pb2 as pb
from me2_scheduler.protos import scheduler_pb2_grpc

log = logging.getLogger("me2_devkit.chaos")

ENABLE = "EnableAvatarSchedule"
PAUSE = "PauseAvatarSchedule"
RESUME = "ResumeAvatarSchedule"
TRIGGER = "TriggerSchedule"
STATE_CHANGES = frozenset({ENABLE, PAUSE, RESUME})
REACTIVATIONS = frozenset({ENABLE, RESUME})
UNANSWERED = -1  # ``code`` of a call that got a gRPC error instead of an answer
DECIDED = frozenset({0, 400, 404, 409})  # answers that say for sure what the call did
CALL_TIMEOUT_S = 5.0
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True)
class RpcCall:
    """One call and its answer; times are epoch seconds on this host's clock."""

    method: str
    avatar_id: int
    sent: float
    returned: float
    code: int  # the answer's code, or UNANSWERED
    error: str = ""  # the answer's message when not ok, or the gRPC status
    source: str = "burst"  # setup | burst | operator
    hist_before: int | None = None  # the avatar's highest history id; None: unknown
    hist_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def certain(self) -> bool:
        """Whether it is known that the call applied (code 0) or did not (400/404/409)."""
        return self.code in DECIDED


class HistoryMark:
    """The highest history id of an avatar, on one MySQL connection per thread."""

    def __init__(self, host: str, port: int, database: str) -> None:
        self._args = {"host": host, "port": port, "user": "root", "database": database}
        self._local = threading.local()

    def __call__(self, avatar_id: int) -> int | None:
        """The mark, or None when MySQL cannot tell right now (e.g. it is stopped)."""
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = pymysql.connect(**self._args, connect_timeout=2, autocommit=True)
                self._local.conn = conn
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT COALESCE(MAX(id), 0) FROM avatar_schedule_history WHERE avatar_id=%s",
                    (avatar_id,),
                )
                return int(cur.fetchone()[0])
        except pymysql.MySQLError:
            self._local.conn = None
            return None


class Journal:
    """Makes calls to the Scheduler API and records each one (thread-safe)."""

    def __init__(self, target: str, mark: HistoryMark) -> None:
        self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)
        self._mark = mark
        self._lock = threading.Lock()
        self.calls: list[RpcCall] = []

    def call(self, method: str, avatar_id: int, source: str = "burst") -> RpcCall:
        """Call ``method`` for ``avatar_id``, record the call and return the record."""
        request = getattr(pb, f"{method}Request")(avatar_id=avatar_id)
        changes = method in STATE_CHANGES
        before = self._mark(avatar_id) if changes else None
        sent = time.time()
        code, error = self._answer(getattr(self._stub, method), request)
        returned = time.time()
        after = self._mark(avatar_id) if changes else None
        record = RpcCall(method, avatar_id, sent, returned, code, error, source, before, after)
        with self._lock:
            self.calls.append(record)
        return record

    @staticmethod
    def _answer(method: Callable[..., Any], request: Any) -> tuple[int, str]:
        try:
            reply = method(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return UNANSWERED, exc.code().name if exc.code() else "UNKNOWN"
        return reply.code, "" if reply.code == 0 else reply.message

    def snapshot(self) -> list[RpcCall]:
        """The calls recorded so far, in the order they returned."""
        with self._lock:
            return list(self.calls)

    def close(self) -> None:
        self._channel.close()


class RpcBurst:
    """Pause, resume and trigger random avatars at ``rate_per_s``, plus bursts on demand.

    Resumes mostly pick avatars this burst paused, so pauses and resumes
    balance and the run keeps most avatars active.
    """

    def __init__(
        self, journal: Journal, avatar_ids: list[int], rng: random.Random, rate_per_s: float
    ) -> None:
        self._journal = journal
        self._avatar_ids = avatar_ids
        self._rng = rng
        self._interval = 1.0 / rate_per_s
        self._paused: set[int] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="chaos-rpc")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-burst", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def burst(self, calls: int) -> None:
        """Fire ``calls`` random calls at once (they run on the pool)."""
        for _ in range(calls):
            self._submit()

    def stop(self) -> None:
        """Stop calling and wait for the calls in progress."""
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._submit()

    def _submit(self) -> None:
        with self._lock:
            method, avatar_id = self._pick()
        self._pool.submit(self._call, method, avatar_id)

    def _pick(self) -> tuple[str, int]:
        roll = self._rng.random()
        if roll < 0.35:
            return PAUSE, self._rng.choice(self._avatar_ids)
        if roll < 0.7:
            pool = sorted(self._paused) if self._paused and self._rng.random() < 0.8 else None
            return RESUME, self._rng.choice(pool or self._avatar_ids)
        return TRIGGER, self._rng.choice(self._avatar_ids)

    def _call(self, method: str, avatar_id: int) -> None:
        try:
            record = self._journal.call(method, avatar_id)
        except Exception:  # a pool thread must not die silently: log it, the run goes on
            log.exception("chaos: %s(%d) raised", method, avatar_id)
            return
        with self._lock:
            if record.ok and method == PAUSE:
                self._paused.add(avatar_id)
            elif record.ok and method == RESUME:
                self._paused.discard(avatar_id)
