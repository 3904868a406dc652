"""The network scenario's fault plan: proxies misbehaving, processes frozen, clocks skewed.

Pure, like ``plan.make_plan``: the same seed and duration give the same plan.
The faults come in blocks that never overlap, in a seeded order, each
followed by a gap as long as the recovery bound, so the audit can see the
service serving and dispatching again after each one (and so a violation
points at one fault). A run (330 s by default) holds:

- MariaDB's proxy: 200 ms latency, jitter, half-open, then resets and a
  20 s blackhole; the same five phases, shorter, for Redis, Action and etcd
  (Action's half-open is 10 s: its existing connections silent, new ones
  working);
- kill -9 of mariadbd, and of a Redis without persistence (back empty);
- SIGSTOP of the poller, and of a worker (during etcd's block, which must
  not stop dispatching), each for three leases, then SIGCONT;
- a second supervisor under libfaketime 45 s behind, then one 45 s ahead.

Blocks after which dispatching never stopped (etcd, the skewed supervisors)
are followed by a short gap only; Action's, by a longer one that leaves room
for the operator's resume. Raises ValueError for a run too short.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from me2_devkit.chaos.plan import (
    MARIADB_KILL9,
    POLLER_SIGSTOP,
    REDIS_KILL9,
    RPC_BURST,
    SKEWED_AHEAD,
    SKEWED_BEHIND,
    WORKER_SIGSTOP,
    Fault,
    FaultPlan,
    proxy_kind,
)

NETWORK_DURATION_S = 330.0  # the scenario's default length: its blocks need about 316 s
WARMUP_S = 10.0
QUIET_GAP_S = 5.0  # after a block that must not stop dispatching
SKEWED_STAY_S = 20.0  # a skewed supervisor's stay (it boots in about 3 s)
MARIADB_BLACKHOLE_S = 20.0  # the target case: recovery after 20 s of silence
LATENCY_MS, JITTER_MS, JITTER_SPREAD_MS = 200.0, 20.0, 300.0
KILL_DOWN_S = 3.0  # kill -9, then started again this much later
# After Action's failing phases an operator resumes the avatars they auto-paused,
# this long after Action answers again; the calls take a few seconds more.
OPERATOR_WAIT_S = 6.0
OPERATOR_RESUME_S = 4.0


@dataclass(frozen=True)
class Block:
    """Faults (``at_s`` relative to the block's start) and the gap that follows it."""

    faults: tuple[Fault, ...]
    gap_s: float

    @property
    def length_s(self) -> float:
        return max(f.end_s for f in self.faults)


def _phases(server: str, *lengths: tuple[str, float]) -> tuple[Fault, ...]:
    """``server``'s proxy phases back to back, from 0."""
    faults, at = [], 0.0
    for phase, length in lengths:
        faults.append(Fault(proxy_kind(server, phase), at, length))
        at += length
    return tuple(faults)


def network_blocks(lease_s: float, gap_s: float) -> list[Block]:
    """The scenario's blocks, in a fixed order (``make_network_plan`` shuffles them)."""
    freeze = 3 * lease_s
    operator_gap = gap_s + OPERATOR_WAIT_S + OPERATOR_RESUME_S
    etcd = _phases(
        "etcd", ("latency", 3), ("jitter", 3), ("half_open", 4), ("resets", 3), ("blackhole", 6)
    )
    redis = _phases(
        "redis", ("latency", 4), ("jitter", 4), ("half_open", 5), ("resets", 3), ("blackhole", 8)
    )
    return [
        Block(_phases("mariadb", ("latency", 4), ("jitter", 4), ("half_open", 5)), gap_s),
        Block(_phases("mariadb", ("resets", 4), ("blackhole", MARIADB_BLACKHOLE_S)), gap_s),
        Block(redis, gap_s),
        Block(_phases("action", ("latency", 4), ("jitter", 4), ("half_open", 10)), operator_gap),
        Block(_phases("action", ("resets", 3), ("blackhole", 8)), operator_gap),
        Block((Fault(MARIADB_KILL9, 0, KILL_DOWN_S),), gap_s),
        Block((Fault(REDIS_KILL9, 0, KILL_DOWN_S),), gap_s),
        Block((Fault(POLLER_SIGSTOP, 0, freeze),), gap_s),
        Block((*etcd, Fault(WORKER_SIGSTOP, 2, freeze)), QUIET_GAP_S),
        Block((Fault(SKEWED_BEHIND, 0, SKEWED_STAY_S),), QUIET_GAP_S),
        Block((Fault(SKEWED_AHEAD, 0, SKEWED_STAY_S),), QUIET_GAP_S),
    ]


def make_network_plan(seed: int, duration_s: float, *, lease_s: float, gap_s: float) -> FaultPlan:
    """The network scenario for ``duration_s``: blocks in a seeded order, extra time spread
    between them, and a few RPC bursts anywhere.

    Raises ValueError when the blocks and their gaps do not fit.
    """
    rng = random.Random(seed)
    blocks = network_blocks(lease_s, gap_s)
    rng.shuffle(blocks)
    needed = WARMUP_S + sum(b.length_s + b.gap_s for b in blocks)
    slack = duration_s - needed
    if slack < 0:
        raise ValueError(
            f"a {duration_s:g} s run is too short for the network scenario (at least"
            f" {needed:.0f} s)"
        )
    extra = sorted(rng.uniform(0, slack) for _ in blocks)
    faults, start = [], WARMUP_S
    for i, block in enumerate(blocks):
        start += extra[i] - (extra[i - 1] if i else 0.0)
        faults += [Fault(f.kind, round(start + f.at_s, 1), f.duration_s) for f in block.faults]
        start += block.length_s + block.gap_s
    faults += [
        Fault(RPC_BURST, round(rng.uniform(WARMUP_S, duration_s - gap_s), 1)) for _ in range(4)
    ]
    return FaultPlan.in_time_order(seed, duration_s, faults)
