"""What a chaos run is asked to do: its scenario, size, seed and the service's timing.

Three scenarios: ``faults`` (the seeded plan of ``plan.make_plan``),
``inflight`` (MaxInFlight 400, Action slow then failing then down) and
``network`` (``netplan``: fault proxies in front of every server, frozen
processes, skewed clocks, with a 5 s lease so that 200 ms of MariaDB latency
still leaves a dispatch time to record within its lease).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from me2_devkit.chaos.data import Bounds
from me2_devkit.chaos.plan import FaultPlan, make_inflight_plan, make_plan

ACTION_TIMEOUT_MS = 1000
LEASE_S = 3
FAULTS, INFLIGHT, NETWORK = "faults", "inflight", "network"  # the scenarios
SCENARIOS = (FAULTS, NETWORK, INFLIGHT)

BOUNDS = Bounds(
    max_interval_s=6,
    lease_s=LEASE_S,
    scan_interval_s=5,
    sweep_grace_s=2,
    poll_interval_s=0.2,
    action_timeout_s=ACTION_TIMEOUT_MS / 1000,
    max_failures=5,
    min_interval_s=2,
    retry_s=1,
)
INFLIGHT_MAX = 400
INFLIGHT_TIMEOUT_MS = 2000  # over the slow phase's 1 s: slow, not failing
INFLIGHT_LEASE_S = 6  # over the timeout, with room to record 40 calls at once
NETWORK_LEASE_S = 5


@dataclass(frozen=True)
class ChaosOptions:
    """How long, how many avatars, which seed; ``root`` keeps the run's files there."""

    duration_s: float = 300.0
    seed: int = 1
    avatars: int = 2000
    workers: int = 10
    settle_s: float = 20.0
    rpc_rate: float = 4.0  # burst calls per second
    faults: bool = True
    root: Path | None = None
    scenario: str = FAULTS
    max_in_flight: int = 0  # 0: MaxWorkers, one call per worker
    action_timeout_ms: int = ACTION_TIMEOUT_MS
    lease_s: int = LEASE_S

    @property
    def bounds(self) -> Bounds:
        """The audit's timing bounds for this run's config."""
        return replace(BOUNDS, lease_s=self.lease_s, action_timeout_s=self.action_timeout_ms / 1000)

    @property
    def network(self) -> bool:
        """Whether the service reaches its servers through fault proxies (and etcd)."""
        return self.scenario == NETWORK

    def plan(self) -> FaultPlan:
        """The scenario's fault plan for this run (none with ``faults=False``).

        Raises ValueError when the run is too short for it.
        """
        from me2_devkit.chaos.netplan import make_network_plan

        if not self.faults:
            return FaultPlan(self.seed, self.duration_s)
        if self.scenario == INFLIGHT:
            return make_inflight_plan(self.seed, self.duration_s)
        if self.network:
            return make_network_plan(
                self.seed, self.duration_s, lease_s=self.lease_s, gap_s=self.bounds.recovery_after_s
            )
        return make_plan(self.seed, self.duration_s)


def inflight_options(**overrides: object) -> ChaosOptions:
    """Options of the in-flight scenario: MaxInFlight 400, a 2 s timeout, a 6 s lease."""
    fields: dict[str, object] = {
        "scenario": INFLIGHT,
        "max_in_flight": INFLIGHT_MAX,
        "action_timeout_ms": INFLIGHT_TIMEOUT_MS,
        "lease_s": INFLIGHT_LEASE_S,
    }
    fields.update(overrides)
    return ChaosOptions(**fields)  # type: ignore[arg-type]


def network_options(**overrides: object) -> ChaosOptions:
    """Options of the network scenario: fault proxies, etcd, a 5 s lease, 330 s."""
    from me2_devkit.chaos.netplan import NETWORK_DURATION_S

    fields: dict[str, object] = {
        "scenario": NETWORK,
        "lease_s": NETWORK_LEASE_S,
        "duration_s": NETWORK_DURATION_S,
    }
    fields.update(overrides)
    return ChaosOptions(**fields)  # type: ignore[arg-type]


def options_for(scenario: str, **overrides: object) -> ChaosOptions:
    """The options of ``scenario`` with ``overrides``. Raises ValueError for an unknown one."""
    makers = {FAULTS: ChaosOptions, INFLIGHT: inflight_options, NETWORK: network_options}
    if scenario not in makers:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    return makers[scenario](**overrides)  # type: ignore[operator]
