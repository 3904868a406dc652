"""Discovery through a real etcd: the watcher follows key/ changes and clients follow it."""

from __future__ import annotations

import pytest

from me2_devkit.testing.servers import free_port
from me2_scheduler.clients import ActionClient
from me2_scheduler.config import EtcdConf, RpcClientConf
from me2_scheduler.discovery.resolver import EndpointWatcher
from me2_scheduler.errors import DownstreamError

from .fixtures_etcd import calls_seen
from .support import wait_until

pytestmark = pytest.mark.timeout(240)


# --- discovery ----------------------------------------------------------------------------


def test_watcher_keeps_the_distinct_values_under_key_slash_and_follows_changes(etcd, client, key):
    client.put(f"{key}/1", "10.0.0.1:1")
    client.put(f"{key}/2", "10.0.0.1:1")  # the same endpoint twice counts once
    client.put(f"{key}/3", "10.0.0.2:2")
    client.put(f"{key}2/1", "10.0.0.9:9")  # another service: the prefix ends with "/"
    client.put(key, "10.0.0.8:8")
    watcher = EndpointWatcher(EtcdConf(hosts=(etcd.address,), key=key))
    watcher.start()
    try:
        assert watcher.wait_loaded(5)
        assert watcher.endpoints() == ("10.0.0.1:1", "10.0.0.2:2")
        client.put(f"{key}/4", "10.0.0.3:3")
        client.delete(f"{key}/3")
        wait_until(lambda: watcher.endpoints() == ("10.0.0.1:1", "10.0.0.3:3"), 5, "the changes")
        client.delete(f"{key}/1")
        client.put(f"{key}/5", "10.0.0.4:4")  # seen after the delete: events come in order
        wait_until(lambda: "10.0.0.4:4" in watcher.endpoints(), 5, "the put after the delete")
        assert "10.0.0.1:1" in watcher.endpoints()  # still registered as key/2
        client.delete(f"{key}/2")
        wait_until(
            lambda: watcher.endpoints() == ("10.0.0.3:3", "10.0.0.4:4"), 5, "the last copy removed"
        )
    finally:
        watcher.close()


def test_action_calls_follow_endpoints_added_and_removed_in_etcd(etcd, client, key, simulators):
    first, second = simulators
    client.put(f"{key}/1", first.address)
    action = ActionClient(RpcClientConf(etcd=EtcdConf(hosts=(etcd.address,), key=key)))
    try:
        for n in range(5):
            action.schedule_action(1, f"1:{n}", "manual")
        assert (calls_seen(first), calls_seen(second)) == (5, 0)

        client.put(f"{key}/2", second.address)
        wait_until(lambda: len(action.endpoints()) == 2, 5, "the second endpoint")
        for n in range(40):
            action.schedule_action(2, f"2:{n}", "manual")
        assert calls_seen(second) > 0
        assert calls_seen(first) + calls_seen(second) == 45

        client.delete(f"{key}/2")
        wait_until(lambda: action.endpoints() == (first.address,), 5, "the removal")
        before = (calls_seen(first), calls_seen(second))
        for n in range(20):
            action.schedule_action(3, f"3:{n}", "manual")
        assert (calls_seen(first), calls_seen(second)) == (before[0] + 20, before[1])
    finally:
        action.close()


def test_an_endpoint_that_stopped_answering_is_passed_over_while_still_registered(
    etcd, client, key, simulators
):
    alive, dead = simulators
    client.put(f"{key}/1", alive.address)
    client.put(f"{key}/2", dead.address)  # as after kill -9: the key stays until the TTL
    dead.stop(0)
    action = ActionClient(RpcClientConf(etcd=EtcdConf(hosts=(etcd.address,), key=key)))
    failures = 0
    try:
        for n in range(20):
            try:
                action.schedule_action(4, f"4:{n}", "manual")
            except DownstreamError as exc:
                assert exc.unavailable
                failures += 1
    finally:
        action.close()
    assert failures < 5  # each failure sets the dead endpoint aside for 2 s
    assert calls_seen(alive) == 20 - failures


def test_a_service_with_no_registered_endpoint_is_unavailable(etcd, key):
    action = ActionClient(RpcClientConf(target=f"etcd://{etcd.address}/{key}"))
    try:
        with pytest.raises(DownstreamError, match=f"registered under {key}/") as raised:
            action.schedule_action(1, "1:0", "manual")
        assert raised.value.unavailable
    finally:
        action.close()


def test_an_unreachable_etcd_makes_the_service_unavailable(key):
    conf = RpcClientConf(
        etcd=EtcdConf(hosts=(f"127.0.0.1:{free_port()}",), key=key), timeout_ms=500
    )
    action = ActionClient(conf)
    try:
        with pytest.raises(DownstreamError, match="cannot be read from etcd") as raised:
            action.schedule_action(1, "1:0", "manual")
        assert raised.value.unavailable
    finally:
        action.close()
