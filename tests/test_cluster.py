"""The service on a real 3-master Redis Cluster (``Redis.Type: cluster``), audited.

The cluster is three ``redis-server --cluster-enabled yes`` joined by
``redis-cli --cluster create``; the service gets the three seeds in
``Redis.Host``. Every index key carries one hash tag, so every Lua script runs
on one node; a CROSSSLOT error anywhere would fail the run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.cluster

from me2_devkit.chaos.plan import WORKER_KILL, Fault, FaultPlan
from me2_devkit.chaos.runner import ChaosOptions, RedisTarget, run_chaos
from me2_devkit.testing.cluster import RedisClusterServers
from me2_devkit.testing.servers import temp_root
from me2_scheduler.config import RedisConf
from me2_scheduler.storage.index import DelayIndex

from .support import serving

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    yield from serving(RedisClusterServers(root=temp_root("me2-redis-cluster-")))


def test_the_cluster_serves_every_slot_from_three_masters(cluster: RedisClusterServers) -> None:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        masters = {node.name for node in client.get_primaries()}
        assert masters == set(cluster.addresses)
    finally:
        client.close()


def test_the_index_keys_share_one_slot_so_scripts_run_on_the_cluster(
    cluster: RedisClusterServers,
) -> None:
    conf = RedisConf(host=cluster.hosts, type="cluster", key="cluster:index-test")
    with DelayIndex(conf) as index:
        index.put_due(1, int(index.now()) - 1)
        assert index.claim_due(batch=10, lease_s=30) == 1
        [claim] = index.pop_ready_many(1, timeout_s=1).claims
        assert claim.avatar_id == 1
        assert index.renew_leases([claim], lease_s=30) == [True]
        assert index.ack(claim, next_due=int(index.now()) + 60) is True
        assert index.sizes()["due"] == 1
        slots = {index.client.keyslot(key) for key in index.keys.all()}
    assert len(slots) == 1


def test_a_short_audited_run_with_a_worker_kill_passes_on_the_cluster(
    cluster: RedisClusterServers,
) -> None:
    duration = 20.0
    plan = FaultPlan(seed=3, duration_s=duration, faults=(Fault(WORKER_KILL, 8.0),))
    options = ChaosOptions(duration_s=duration, seed=3, avatars=100, workers=3, settle_s=12)

    result = run_chaos(options, plan=plan, redis=RedisTarget(cluster.hosts, "cluster"))

    summary = result.summary
    assert summary.redis == "cluster"
    assert [w.kind for w in summary.windows] == [WORKER_KILL]
    assert summary.outcomes["success"] >= 100, summary.outcomes
    failed = [(f.key, f.violations[:5]) for f in summary.findings if not f.ok]
    assert not failed and not summary.injector_errors, (failed, summary.injector_errors)
