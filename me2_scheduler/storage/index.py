"""The Redis delay index: which active avatar is due when, and which is in flight.

MySQL is the truth; this index only makes "who is due now" cheap at millions
of avatars (DESIGN §2.2, §3.1). Every move between the sets is one Lua script
(``storage/lua/*.lua``, one per operation, each with a KEYS/ARGV header), so
any number of pollers, workers and hosts can share the index: a claim is
atomic and is a lease with an expiry, and Redis ``TIME`` is the one clock.

Invariant kept by the scripts: an avatar is in at most one of ``due`` and
``inflight``; an in-flight avatar has exactly one current claim token, and
only that token can settle it. Redis failures surface as ``RedisIndexError``.
Rebuilding, sweeping and verifying the index against MySQL is
``storage/reconcile.py``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from me2_scheduler.chunking import chunks
from me2_scheduler.closeable import Closeable
from me2_scheduler.config import RedisConf
from me2_scheduler.errors import RedisIndexError
from me2_scheduler.storage.claim import Claim
from me2_scheduler.storage.keys import Keys
from me2_scheduler.storage.redis_conn import RedisClient, make_redis
from me2_scheduler.storage.scripts import redis_errors, script_sources, translated

log = logging.getLogger(__name__)

INDEX_VERSION = 1
SCRIPT_CHUNK = 1000  # avatars per put_due/absent script call: keeps each call ~1 ms
REBUILD_TTL_S = 3600  # a crashed rebuild's temporary set cleans itself up
SCAN_COUNT = 5000  # ZSCAN's COUNT hint when listing members


class Confirmed(NamedTuple):
    """What one ``confirm_leases`` found: one flag per claim (still held), and Redis TIME."""

    held: list[bool]
    server_time: float  # epoch seconds


class Popped(NamedTuple):
    """What one ``pop_ready_many`` took: the claims, and how many entries were malformed."""

    claims: list[Claim]
    malformed: int


def _check_lease(lease_s: float) -> None:
    if lease_s < 0:
        raise ValueError(f"lease_s must be >= 0, got {lease_s}")


class DelayIndex(Closeable):
    """The delay index of one ``Redis.Key``.

    Make it in the process that uses it (after fork). ``client`` may be
    injected (fakeredis in unit tests); otherwise one is made from ``conf``
    and closed by ``close``. Raises ``ConfigError`` for a bad ``Redis`` config.
    Every method raises ``RedisIndexError`` when Redis fails.
    """

    def __init__(self, conf: RedisConf, *, client: RedisClient | None = None) -> None:
        self.keys = Keys.from_conf(conf)
        self._owns_client = client is None
        self.client: RedisClient = client if client is not None else make_redis(conf)
        self._scripts = {
            name: self.client.register_script(source) for name, source in script_sources().items()
        }

    def close(self) -> None:
        """Close the client if this index made it."""
        if self._owns_client:
            self.client.close()

    def _run(self, name: str, keys: list[str], args: Iterable[Any] = ()) -> Any:
        return self._scripts[name](keys=keys, args=list(args))

    # -- the dispatch path --------------------------------------------------

    @translated
    def claim_due(self, batch: int, lease_s: float, *, max_ready: int = 0) -> int:
        """Move up to ``batch`` due avatars to the ready list under a ``lease_s`` lease.

        With ``max_ready`` > 0 no more are claimed than keep the ready list at
        most that long. Returns how many were claimed. Raises ``ValueError``
        for batch < 1 or lease_s < 0.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        _check_lease(lease_s)
        k = self.keys
        claimed = self._run(
            "claim_due",
            [k.due, k.inflight, k.leases, k.ready],
            [batch, lease_s, secrets.token_hex(6), max(max_ready, 0)],
        )
        return int(claimed)

    def _pop_entry(self, remaining_s: float) -> str | None:
        if remaining_s <= 0:
            return self.client.lpop(self.keys.ready)
        popped = self.client.blpop([self.keys.ready], timeout=remaining_s)
        return popped[1] if popped else None

    @translated
    def pop_ready_many(self, limit: int, timeout_s: float = 1.0) -> Popped:
        """Take up to ``limit`` claims from the ready list, waiting up to ``timeout_s`` for one.

        One round trip while the list has entries (``LPOP`` with a count); when
        it is empty, a blocking pop waits for the first. Entries are not checked
        here: ``renew_leases`` drops the stale ones before Action. A malformed
        entry is logged, dropped and counted in ``Popped.malformed`` (the
        caller counts the error). No claims when nothing arrived in time.
        Raises ``ValueError`` for limit < 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        entries = self.client.lpop(self.keys.ready, limit) or []
        if not entries and timeout_s > 0:
            first = self._pop_entry(timeout_s)
            if first is not None:
                entries = [first]
                if limit > 1:
                    entries += self.client.lpop(self.keys.ready, limit - 1) or []
        claims = []
        for entry in entries:
            try:
                claims.append(Claim.parse(entry))
            except ValueError:
                log.error("dropped a malformed ready entry %r", entry)
        return Popped(claims, len(entries) - len(claims))

    @translated
    def requeue(self, claims: list[Claim]) -> None:
        """Put claims back at the head of the ready list, in order, leases untouched.

        For a worker that stops, or hands back the rest of a batch that ran
        long, before dispatching them: the next worker to pop them renews
        their leases as usual (a stale one is dropped then).
        """
        if claims:
            self.client.lpush(self.keys.ready, *[claim.entry for claim in reversed(claims)])

    @translated
    def renew_leases(self, claims: list[Claim], lease_s: float) -> list[bool]:
        """Confirm each claim is still current and restart its lease from now, in one call.

        A claim may wait in the ready list, so its worker starts a full lease
        before dispatching. Returns one flag per claim: False when it is stale
        (do not dispatch it). Raises ``ValueError`` for lease_s < 0.
        """
        _check_lease(lease_s)
        return self.confirm_leases(claims, lease_s).held if claims else []

    @translated
    def confirm_leases(self, claims: list[Claim], lease_s: float) -> Confirmed:
        """``renew_leases``, with the Redis ``TIME`` the script ran at (no extra round trip).

        Raises ``ValueError`` for lease_s < 0 or no claims.
        """
        _check_lease(lease_s)
        if not claims:
            raise ValueError("no claims to confirm")
        args: list[Any] = [lease_s]
        for claim in claims:
            args += [claim.avatar_id, claim.token]
        k = self.keys
        (seconds, micros), current = self._run("pickup", [k.inflight, k.leases], args)
        held = [flag == 1 for flag in current]
        return Confirmed(held, int(seconds) + int(micros) / 1_000_000)

    @translated
    def ack(self, claim: Claim, next_due: int | None) -> bool:
        """End ``claim``'s lease; with ``next_due`` (epoch s) put the avatar back in due.

        Returns False, changing nothing, when the claim is stale (released and
        maybe re-claimed, or the avatar was removed meanwhile).
        """
        return self.ack_many([(claim, next_due)]) == [True]

    @translated
    def ack_many(self, settled: list[tuple[Claim, int | None]]) -> list[bool]:
        """``ack`` for many ``(claim, next_due)`` in one script call: which were applied."""
        if not settled:
            return []
        args: list[Any] = []
        for claim, next_due in settled:
            args += [claim.avatar_id, claim.token, "" if next_due is None else int(next_due)]
        k = self.keys
        applied = self._run("ack", [k.inflight, k.leases, k.due], args)
        return [flag == 1 for flag in applied]

    @translated
    def release_expired(self, limit: int = 1000) -> list[int]:
        """Return up to ``limit`` avatars with expired leases to due at their planned time.

        Returns the released avatar_ids. Raises ``ValueError`` for limit < 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        k = self.keys
        released = self._run("release_expired", [k.inflight, k.leases, k.due], [limit])
        return [int(avatar_id) for avatar_id in released]

    @translated
    def claim_one(self, avatar_id: int, lease_s: float) -> Claim | None:
        """Claim one avatar now (manual trigger), planned at Redis TIME in milliseconds.

        The planned time is never a whole second, so the trigger's idempotency
        key differs from every auto slot's (those are whole seconds). Returns
        None when the avatar is in flight. The avatar need not be due. Raises
        ``ValueError`` for lease_s < 0.
        """
        _check_lease(lease_s)
        k = self.keys
        token = secrets.token_hex(8)
        held = self._run("claim_one", [k.due, k.inflight, k.leases], [avatar_id, lease_s, token])
        return None if held is None else Claim.held(avatar_id, held)

    # -- keeping the index in step with MySQL ------------------------------

    @translated
    def put_due(self, avatar_id: int, due_epoch: int, *, only_if_absent: bool = False) -> bool:
        """Add or move one avatar in due; False (nothing written) when it is in flight.

        With ``only_if_absent`` an avatar already in due keeps its score (the sweep).
        """
        return self.put_due_many([(avatar_id, due_epoch)], only_if_absent=only_if_absent) == 1

    @translated
    def put_due_many(
        self, pairs: Iterable[tuple[int, int]], *, only_if_absent: bool = False
    ) -> int:
        """Add or move many ``(avatar_id, due_epoch)``; in-flight avatars are skipped.

        With ``only_if_absent`` avatars already in due keep their scores.
        Returns how many were written. Sent in chunks of ``SCRIPT_CHUNK``.
        """
        written = 0
        for batch in chunks(pairs, SCRIPT_CHUNK):
            args = ["1" if only_if_absent else ""]
            args += [value for avatar_id, due in batch for value in (avatar_id, int(due))]
            written += int(self._run("put_due", [self.keys.due, self.keys.inflight], args))
        return written

    @translated
    def remove(self, avatar_id: int) -> bool:
        """Take an avatar out of due and inflight and drop its lease (pause/disable wins).

        Returns True when it was in either set.
        """
        k = self.keys
        return int(self._run("remove", [k.due, k.inflight, k.leases], [avatar_id])) > 0

    @translated
    def absent(self, avatar_ids: Iterable[int]) -> list[int]:
        """The given avatars that are in neither due nor inflight (for the sweep)."""
        missing: list[int] = []
        for batch in chunks(avatar_ids, SCRIPT_CHUNK):
            found = self._run("absent", [self.keys.due, self.keys.inflight], batch)
            missing.extend(int(avatar_id) for avatar_id in found)
        return missing

    # -- reading ----------------------------------------------------------

    @translated
    def sizes(self, grace_s: float = 0.0) -> dict[str, int]:
        """Queue sizes at one instant: due, overdue (due over ``grace_s`` ago), inflight, ready."""
        k = self.keys
        due, overdue, inflight, ready = self._run("sizes", [k.due, k.inflight, k.ready], [grace_s])
        return {"due": due, "overdue": overdue, "inflight": inflight, "ready": ready}

    @translated
    def ready_length(self) -> int:
        """How many claims wait in the ready list (stale ones included)."""
        return int(self.client.llen(self.keys.ready))

    @translated
    def due_score(self, avatar_id: int) -> float | None:
        """The avatar's due epoch seconds, or None when it is not in due."""
        return self.client.zscore(self.keys.due, avatar_id)

    @translated
    def is_inflight(self, avatar_id: int) -> bool:
        """Whether the avatar holds a lease right now."""
        return self.client.zscore(self.keys.inflight, avatar_id) is not None

    @translated
    def places(self, avatar_ids: list[int]) -> list[tuple[float | None, bool]]:
        """Each avatar's ``(due score or None, whether in flight)``, read at one instant.

        Both sets are read in one MULTI, so an avatar moving between them is
        never seen in neither.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.zmscore(self.keys.due, avatar_ids)
        pipe.zmscore(self.keys.inflight, avatar_ids)
        due, inflight = pipe.execute()
        return [(score, lease is not None) for score, lease in zip(due, inflight, strict=True)]

    def members(self) -> Iterator[int]:
        """Every avatar_id in due, then in inflight, scanned in pages (one may come twice).

        Raises ``RedisIndexError`` also for a member that is not an avatar_id.
        """
        for key in (self.keys.due, self.keys.inflight):
            with redis_errors(f"scanning {key}"):
                for member, _score in self.client.zscan_iter(key, count=SCAN_COUNT):
                    if not member.isdigit():  # only a foreign writer could have put it there
                        raise RedisIndexError(f"{key} holds {member!r}, which is not an avatar_id")
                    yield int(member)

    @translated
    def member_count(self) -> int:
        """How many members due and inflight hold together, now."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.keys.due)
        pipe.zcard(self.keys.inflight)
        return sum(pipe.execute())

    @translated
    def next_due(self, n: int) -> list[tuple[int, float]]:
        """The ``n`` earliest ``(avatar_id, due epoch seconds)``."""
        if n < 1:
            return []
        pairs = self.client.zrange(self.keys.due, 0, n - 1, withscores=True)
        return [(int(avatar_id), float(score)) for avatar_id, score in pairs]

    @translated
    def now(self) -> float:
        """Redis ``TIME`` in epoch seconds: the index's one clock."""
        seconds, micros = self.client.time()
        return seconds + micros / 1_000_000

    @translated
    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self.client.ping())

    # -- rebuild ------------------------------------------------------------

    @translated
    def has_meta(self) -> bool:
        """Whether the index was built; False means it must be rebuilt from MySQL."""
        return self.client.exists(self.keys.meta) == 1

    @translated
    def rebuild(
        self,
        rows: Iterable[tuple[int, int]],
        *,
        chunk: int = 10_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Replace due with ``(avatar_id, due_epoch)`` rows and write meta; return the row count.

        The rows are streamed into a temporary set of this run, then swapped in
        by one script, so no reader ever sees half an index; avatars in flight
        are left to their workers. Updates made to due while streaming are
        replaced by the rows' values; the worker's pick-up check and the sweep
        repair those (DESIGN §2.3). ``progress`` gets how many rows were just
        streamed. Errors raised by ``rows`` (e.g. ``StoreError``) pass through.
        """
        k = self.keys
        run_key = k.rebuild_run(secrets.token_hex(6))
        total = 0
        for batch in chunks(rows, chunk):
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(run_key, {str(avatar_id): int(due) for avatar_id, due in batch})
            pipe.expire(run_key, REBUILD_TTL_S)
            pipe.execute()
            total += len(batch)
            if progress is not None:
                progress(len(batch))
        self._run("swap_rebuild", [run_key, k.due, k.inflight, k.meta], [INDEX_VERSION, total])
        log.info("rebuilt the Redis index: %d rows", total)
        return total
