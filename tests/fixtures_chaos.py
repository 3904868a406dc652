"""Values the chaos tests share: the audit's bounds and the epoch their histories start at."""

from __future__ import annotations

from dataclasses import replace

from me2_devkit.chaos.audit import Bounds

T0 = 1_700_000_000.0
BOUNDS = Bounds(
    max_interval_s=6,
    lease_s=3,
    scan_interval_s=5,
    sweep_grace_s=2,
    poll_interval_s=0.2,
    action_timeout_s=1,
    max_failures=5,
)
# The network audit also draws next times: an interval of 2-6 s, a retry after 1 s.
NETWORK_BOUNDS = replace(BOUNDS, min_interval_s=2, retry_s=1)
