"""The seeded fault plan: which fault happens when, for how long.

Pure: ``make_plan(seed, duration_s)`` always gives the same plan for the same
arguments. The long outages (MariaDB stopped, Redis lost, Action failing then
slow) never overlap and are separated by a recovery gap, so each one's effect
stays visible; the kills, the second supervisor and the RPC bursts fall
anywhere. At the full 300 s the counts and lengths are the targets (kill a
worker 10 times, the poller 3, the rpc_server 2, MariaDB down 20 s, Action
failing 30 s then slow 30 s, a second supervisor for 60 s); a shorter run
scales them down, keeping at least one of each.

``make_inflight_plan`` is the in-flight scenario (Action calls in flight), run with
``Schedule.MaxInFlight`` 400: Action slow (1 s a call, under the timeout),
then failing half its calls, then down (its port shut), back to back, with
worker kills while hundreds of calls are in flight.

The network scenario's kinds are named here too (its plan is ``netplan``),
so that ``OUTAGES``, ``CRASHES`` and ``FREEZES`` classify every kind in one place.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

WORKER_KILL = "worker_kill"
POLLER_KILL = "poller_kill"
RPC_SERVER_KILL = "rpc_server_kill"
REDIS_RESTART = "redis_restart"
MARIADB_STOP = "mariadb_stop"
ACTION_FAILING = "action_failing"
ACTION_SLOW = "action_slow"
SECOND_SUPERVISOR = "second_supervisor"
RPC_BURST = "rpc_burst"
ACTION_LAGGING = "action_lagging"  # slow but within the timeout: calls pile up in flight
ACTION_HALF_FAILING = "action_half_failing"
ACTION_DOWN = "action_down"

KINDS = (
    WORKER_KILL,
    POLLER_KILL,
    RPC_SERVER_KILL,
    REDIS_RESTART,
    MARIADB_STOP,
    ACTION_FAILING,
    ACTION_SLOW,
    SECOND_SUPERVISOR,
    RPC_BURST,
)

INFLIGHT_KINDS = (ACTION_LAGGING, ACTION_HALF_FAILING, ACTION_DOWN, WORKER_KILL, RPC_BURST)

# The network scenario (``netplan``): a fault proxy in front of each server,
# in one phase at a time (``<server>_<phase>``, e.g. ``mariadb_blackhole``).
PROXIED = ("mariadb", "redis", "action", "etcd")
PROXY_PHASES = ("latency", "jitter", "resets", "blackhole", "half_open")
WORKER_SIGSTOP = "worker_sigstop"  # SIGSTOP, then SIGCONT after three leases
POLLER_SIGSTOP = "poller_sigstop"
SKEWED_BEHIND = "second_supervisor_behind"  # under libfaketime, 45 s behind
SKEWED_AHEAD = "second_supervisor_ahead"  # 45 s ahead
MARIADB_KILL9 = "mariadb_kill9"
REDIS_KILL9 = "redis_kill9"  # a Redis without persistence: it comes back empty


def proxy_kind(server: str, phase: str) -> str:
    """The fault kind of ``server``'s proxy in ``phase``."""
    return f"{server}_{phase}"


PROXY_KINDS = tuple(proxy_kind(s, p) for s in PROXIED for p in PROXY_PHASES)
NETWORK_KINDS = (
    *PROXY_KINDS,
    WORKER_SIGSTOP,
    POLLER_SIGSTOP,
    SKEWED_BEHIND,
    SKEWED_AHEAD,
    MARIADB_KILL9,
    REDIS_KILL9,
)

# Faults during which dispatching is expected to stall or fall behind: a gap
# between two dispatches of an avatar that overlaps one is excused. etcd's
# faults are not among them: the service keeps the Action addresses it knows.
OUTAGES = frozenset(
    {
        REDIS_RESTART,
        MARIADB_STOP,
        ACTION_FAILING,
        ACTION_SLOW,
        ACTION_LAGGING,
        ACTION_HALF_FAILING,
        ACTION_DOWN,
        *(k for k in PROXY_KINDS if not k.startswith("etcd_")),
        POLLER_SIGSTOP,
        MARIADB_KILL9,
        REDIS_KILL9,
    }
)
# Faults that may cut a dispatch between its Action call and its record: the
# slot may then reach Action twice, always with the same idempotency key.
# MariaDB cut off (reset, silent) is one: the record cannot be written.
CRASHES = frozenset(
    {
        WORKER_KILL,
        RPC_SERVER_KILL,
        REDIS_RESTART,
        MARIADB_STOP,
        MARIADB_KILL9,
        REDIS_KILL9,
        *(proxy_kind("mariadb", p) for p in ("resets", "blackhole", "half_open")),
    }
)
# A frozen worker is no crash: once it wakes it must not call Action for a
# claim whose lease another worker took (fencing). Only a call it had made
# before it froze may be repeated, by the worker that took the claim over.
FREEZES = frozenset({WORKER_SIGSTOP})

FULL_DURATION_S = 300.0
REDIS_DOWN_S = 2.0  # Redis is restarted empty; it is down this long in between


@dataclass(frozen=True)
class Scale:
    """Counts and lengths of the faults for a run of some length."""

    worker_kills: int
    poller_kills: int
    rpc_server_kills: int
    mariadb_down_s: float
    action_phase_s: float  # failing this long, then slow this long
    second_supervisor_s: float
    rpc_bursts: int
    warmup_s: float
    cooldown_s: float
    recovery_gap_s: float

    @classmethod
    def for_duration(cls, duration_s: float) -> Scale:
        """The target figures at 300 s, scaled with the duration (at least one of each)."""
        ratio = duration_s / FULL_DURATION_S
        return cls(
            worker_kills=max(3, math.ceil(10 * ratio)),
            poller_kills=max(1, math.ceil(3 * ratio)),
            rpc_server_kills=max(1, math.ceil(2 * ratio)),
            mariadb_down_s=min(20.0, max(4.0, duration_s / 10)),
            action_phase_s=min(30.0, max(4.0, duration_s / 10)),
            second_supervisor_s=min(60.0, max(10.0, duration_s / 5)),
            rpc_bursts=max(2, math.ceil(6 * ratio)),
            warmup_s=min(15.0, duration_s / 10),
            cooldown_s=min(25.0, duration_s / 8),
            recovery_gap_s=min(15.0, max(5.0, duration_s / 12)),
        )


@dataclass(frozen=True)
class FaultPlan:
    """The faults of one run, in time order."""

    seed: int
    duration_s: float
    faults: tuple[Fault, ...] = ()

    @classmethod
    def in_time_order(cls, seed: int, duration_s: float, faults: Iterable[Fault]) -> FaultPlan:
        """The plan of ``faults``, sorted by start (then kind)."""
        return cls(seed, duration_s, tuple(sorted(faults, key=lambda f: (f.at_s, f.kind))))

    def counts(self) -> Counter[str]:
        """How many faults of each kind."""
        return Counter(fault.kind for fault in self.faults)

    def of(self, kind: str) -> list[Fault]:
        """The faults of one kind, in time order."""
        return [fault for fault in self.faults if fault.kind == kind]


@dataclass(frozen=True)
class Fault:
    """One planned fault: ``kind`` at ``at_s`` seconds into the run, lasting ``duration_s``."""

    kind: str
    at_s: float
    duration_s: float = 0.0

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s


def make_plan(seed: int, duration_s: float) -> FaultPlan:
    """The fault plan for a run of ``duration_s`` seconds, drawn from ``seed``.

    Raises ValueError when the run is too short to hold its outages.
    """
    scale = Scale.for_duration(duration_s)
    rng = random.Random(seed)
    outages = _place_outages(rng, duration_s, scale)
    faults = list(outages)
    window = (scale.warmup_s, duration_s - scale.cooldown_s)
    for kind, count in (
        (WORKER_KILL, scale.worker_kills),
        (POLLER_KILL, scale.poller_kills),
        (RPC_SERVER_KILL, scale.rpc_server_kills),
        (RPC_BURST, scale.rpc_bursts),
    ):
        faults += [Fault(kind, round(rng.uniform(*window), 1)) for _ in range(count)]
    faults.append(_second_supervisor(rng, duration_s, scale, outages))
    return FaultPlan.in_time_order(seed, duration_s, faults)


def _place_outages(rng: random.Random, duration_s: float, scale: Scale) -> list[Fault]:
    """MariaDB, Redis and the Action phases in a random order, apart, at random offsets."""
    blocks = [
        [Fault(MARIADB_STOP, 0, scale.mariadb_down_s)],
        [Fault(REDIS_RESTART, 0, REDIS_DOWN_S)],
        [
            Fault(ACTION_FAILING, 0, scale.action_phase_s),
            Fault(ACTION_SLOW, scale.action_phase_s, scale.action_phase_s),
        ],
    ]
    rng.shuffle(blocks)
    lengths = [block[-1].end_s for block in blocks]
    room = duration_s - scale.warmup_s - scale.cooldown_s
    slack = room - sum(lengths) - scale.recovery_gap_s * (len(blocks) - 1)
    if slack < 0:
        raise ValueError(f"a {duration_s:g} s run is too short for its outages")
    cuts = sorted(rng.uniform(0, slack) for _ in blocks)
    placed, start = [], scale.warmup_s
    for i, block in enumerate(blocks):
        start += cuts[i] - (cuts[i - 1] if i else 0)
        placed += [Fault(f.kind, round(start + f.at_s, 1), f.duration_s) for f in block]
        start += lengths[i] + scale.recovery_gap_s
    return placed


def _second_supervisor(
    rng: random.Random, duration_s: float, scale: Scale, outages: list[Fault]
) -> Fault:
    """A second supervisor's stay, not booting while MariaDB is down (its preflight needs it)."""
    latest = max(scale.warmup_s, duration_s - scale.cooldown_s - scale.second_supervisor_s)
    mariadb = next(f for f in outages if f.kind == MARIADB_STOP)
    at = scale.warmup_s
    for _ in range(100):
        at = round(rng.uniform(scale.warmup_s, latest), 1)
        if not mariadb.at_s - 10 <= at <= mariadb.end_s + 5:
            break
    return Fault(SECOND_SUPERVISOR, at, scale.second_supervisor_s)


def make_inflight_plan(seed: int, duration_s: float) -> FaultPlan:
    """The in-flight scenario: Action slow, then failing half its calls, then down.

    The three phases follow each other after a warm-up, each a third of what
    the warm-up and the cool-down leave (at most a minute); the cool-down is
    long enough for the breaker to close again and be seen closed (its
    window, plus the channel's reconnect backoff). A worker is killed in the
    middle of the slow phase, with the most calls in flight, and again in the
    failing one; RPC bursts fall anywhere. Raises ValueError when the run is
    too short for three phases of at least 5 s.
    """
    warmup = min(15.0, max(5.0, duration_s / 10))
    cooldown = min(40.0, max(16.0, duration_s / 4))
    phase = min(60.0, (duration_s - warmup - cooldown) / 3)
    if phase < 5:
        raise ValueError(f"a {duration_s:g} s run is too short for its outages")
    rng = random.Random(seed)
    lagging = Fault(ACTION_LAGGING, round(warmup, 1), round(phase, 1))
    failing = Fault(ACTION_HALF_FAILING, round(warmup + phase, 1), round(phase, 1))
    down = Fault(ACTION_DOWN, round(warmup + 2 * phase, 1), round(phase, 1))
    kills = [
        Fault(WORKER_KILL, round(lagging.at_s + phase / 2, 1)),
        Fault(WORKER_KILL, round(failing.at_s + phase / 2, 1)),
    ]
    window = (warmup, duration_s - cooldown)
    bursts = [
        Fault(RPC_BURST, round(rng.uniform(*window), 1))
        for _ in range(max(1, math.ceil(2 * duration_s / FULL_DURATION_S)))
    ]
    faults = [lagging, failing, down, *kills, *bursts]
    return FaultPlan.in_time_order(seed, duration_s, faults)
