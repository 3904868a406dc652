"""Registration in a real etcd, in go-zero's format: key/lease, TTL, re-registration, auth, TLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from me2_devkit.testing.certs import make_pki
from me2_devkit.testing.etcd import EtcdServer
from me2_devkit.testing.servers import free_port
from me2_scheduler.config import EtcdConf
from me2_scheduler.discovery.etcd_client import EtcdClient, EtcdError, prefix_range_end
from me2_scheduler.discovery.registry import Publisher, internal_ip, publish_address
from me2_scheduler.discovery.resolver import EndpointWatcher, etcd_conf_from_target

from .support import wait_until

pytestmark = pytest.mark.timeout(240)


def answers(call: Callable[..., object], *args: object) -> bool:
    """Whether ``call(*args)`` succeeds (etcd may still be starting)."""
    try:
        call(*args)
    except EtcdError:
        return False
    return True


# --- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"action.rpc/", b"action.rpc0"), (b"a\xff", b"b"), (b"\xff\xff", b"\0"), (b"", b"\0")],
)
def test_prefix_range_end_is_the_first_key_after_every_key_under_the_prefix(prefix, end):
    assert prefix_range_end(prefix) == end


def test_a_concrete_listen_host_is_published_as_it_is():
    assert publish_address("127.0.0.1:0", 41234, env={"POD_IP": "10.1.2.3"}) == "127.0.0.1:41234"


@pytest.mark.parametrize("listen_on", ["0.0.0.0:8008", ":8008"])
def test_all_interfaces_publish_the_pod_ip(listen_on):
    assert publish_address(listen_on, 8008, env={"POD_IP": "10.1.2.3"}) == "10.1.2.3:8008"


def test_without_pod_ip_the_first_non_loopback_ipv4_is_published():
    host = publish_address("0.0.0.0:8008", 8008, env={}).rpartition(":")[0]
    found = internal_ip()
    assert host == (found or "0.0.0.0")
    assert not host.startswith("127.")


def test_etcd_target_names_hosts_and_key_and_keeps_the_account():
    base = EtcdConf(hosts=("ignored:1",), key="ignored", user="u", password="p", id=7)
    conf = etcd_conf_from_target("etcd://10.0.0.1:2379,10.0.0.2:2379/action.rpc", base)
    got = (conf.hosts, conf.key, conf.user, conf.password, conf.id)
    assert got == (("10.0.0.1:2379", "10.0.0.2:2379"), "action.rpc", "u", "p", 0)


# --- registration -------------------------------------------------------------------------

ADDRESS = "127.0.0.1:4321"  # what every publisher here registers


@contextmanager
def published(conf: EtcdConf) -> Iterator[Publisher]:
    """``ADDRESS`` registered under ``conf``'s key while the block runs."""
    publisher = Publisher(conf, ADDRESS)
    publisher.start()
    try:
        yield publisher
    finally:
        publisher.stop()


def test_registration_is_key_slash_lease_id_with_a_ten_second_lease(etcd, client, key):
    with published(EtcdConf(hosts=(etcd.address,), key=key)) as publisher:
        found, _ = client.get_prefix(f"{key}/")
        lease_id = publisher.lease_id
        assert found == {f"{key}/{lease_id}": ADDRESS}
        assert client.get(f"{key}/{lease_id}").lease == lease_id
        remaining, granted = client.time_to_live(lease_id)
        assert granted == 10
        assert 0 < remaining <= 10
        assert etcd.ctl("get", f"{key}/{lease_id}", "--print-value-only").strip() == ADDRESS


def test_registration_with_an_id_uses_the_id_as_the_key_suffix(etcd, client, key):
    with published(EtcdConf(hosts=(etcd.address,), key=key, id=42)) as publisher:
        assert client.get_prefix(f"{key}/")[0] == {f"{key}/42": ADDRESS}
        assert client.get(f"{key}/42").lease == publisher.lease_id


def test_a_deleted_registration_is_put_back_on_the_same_lease(etcd, client, key):
    with published(EtcdConf(hosts=(etcd.address,), key=key)) as publisher:
        registered, lease_id = publisher.key, publisher.lease_id
        assert etcd.ctl("del", registered).strip() == "1"
        back = wait_until(lambda: client.get(registered), 5, "the key to come back")
        assert (back.value, back.lease) == (ADDRESS.encode(), lease_id)


def test_a_lost_lease_is_replaced_and_the_service_registered_again(etcd, client, key):
    with published(EtcdConf(hosts=(etcd.address,), key=key)) as publisher:
        lost = publisher.lease_id
        client.revoke(lost)  # what etcd does when keepalives stop for a whole TTL
        found = wait_until(
            lambda: {
                k: v for k, v in client.get_prefix(f"{key}/")[0].items() if str(lost) not in k
            },
            5,
            "a registration on a new lease",
        )
        assert found == {f"{key}/{publisher.lease_id}": ADDRESS}
        assert publisher.lease_id != lost
        assert client.time_to_live(publisher.lease_id)[1] == 10


def test_stopping_revokes_the_lease_so_the_key_is_gone_at_once(etcd, client, key):
    with published(EtcdConf(hosts=(etcd.address,), key=key)) as publisher:
        lease_id = publisher.lease_id
    assert client.get_prefix(f"{key}/")[0] == {}
    assert client.time_to_live(lease_id)[0] == -1


def test_first_registration_fails_with_etcd_unreachable(key):
    publisher = Publisher(EtcdConf(hosts=(f"127.0.0.1:{free_port()}",), key=key), "h:1")
    with pytest.raises(EtcdError, match="lease grant"):
        publisher.start()


def test_registration_with_user_and_password_on_an_etcd_with_auth(tmp_path, key):
    server = EtcdServer(root=tmp_path / "etcd-auth").start()
    try:
        server.ctl("user", "add", "root:s3cret-pass")
        server.ctl("user", "grant-role", "root", "root")
        server.ctl("auth", "enable")
        conf = EtcdConf(hosts=(server.address,), key=key, user="root", password="s3cret-pass")
        with published(conf) as publisher:
            listed = server.ctl("get", "--prefix", f"{key}/", user="root:s3cret-pass")
            assert f"{key}/{publisher.lease_id}\n{ADDRESS}" in listed
        wrong = Publisher(
            EtcdConf(hosts=(server.address,), key=key, user="root", password="nope-pw"), "h:1"
        )
        with pytest.raises(EtcdError, match="authenticate") as refused:
            wrong.start()
        assert "nope-pw" not in str(refused.value)
    finally:
        server.stop()


def test_registration_and_discovery_survive_an_etcd_restart(tmp_path, key):
    server = EtcdServer(root=tmp_path / "etcd-restart").start()
    conf = EtcdConf(hosts=(server.address,), key=key)
    publisher, watcher = Publisher(conf, ADDRESS), EndpointWatcher(conf)
    try:
        publisher.start()
        watcher.start()
        wait_until(lambda: watcher.endpoints() == (ADDRESS,), 5, "discovery")
        server.stop()
        server.start()  # same data dir and ports
        with EtcdClient(conf) as client:
            wait_until(lambda: answers(client.put, f"{key}/other", "127.0.0.1:5555"), 15, "etcd")
            # the put is a change only a new watch sees
            wait_until(lambda: len(watcher.endpoints()) == 2, 15, "the watch to resume")
            assert client.get_prefix(f"{key}/")[0][publisher.key] == ADDRESS
            assert client.time_to_live(publisher.lease_id)[0] > 0
    finally:
        watcher.close()
        publisher.stop()
        server.stop()


def test_registration_over_mutual_tls(tmp_path, key):
    pki = make_pki(tmp_path / "pki")
    tls = (pki.server.cert, pki.server.key, pki.ca.cert)
    server = EtcdServer(root=tmp_path / "etcd-tls", tls=tls).start()
    try:
        conf = EtcdConf(
            hosts=(server.address,),
            key=key,
            ca_file=pki.ca.cert,
            cert_file=pki.client.cert,
            cert_key_file=pki.client.key,
        )
        with published(conf) as publisher, EtcdClient(conf) as client:
            assert client.get_prefix(f"{key}/")[0] == {publisher.key: ADDRESS}
        untrusted = replace(
            conf, cert_file=pki.other_client.cert, cert_key_file=pki.other_client.key
        )
        with pytest.raises(EtcdError):
            Publisher(untrusted, "h:1").start()
    finally:
        server.stop()
