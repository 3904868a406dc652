"""Discovery through a real etcd: go-zero's registration format, its lifecycle, and clients.

Every test uses its own key names, so the module shares one etcd server.
Waiting is polling with a deadline; no test sleeps.
"""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from me2_devkit.simulators import (
    ActionSimulator,
    DiarySimulator,
    RunningSimulator,
    SimulatorControl,
    serve,
)
from me2_devkit.testing.certs import make_pki
from me2_devkit.testing.etcd import EtcdServer
from me2_devkit.testing.servers import free_port, temp_root
from me2_devkit.testing.stack import Service, cli_argv
from me2_scheduler.clients import ActionClient
from me2_scheduler.config import Config, EtcdConf, RpcClientConf, load_config
from me2_scheduler.discovery.etcd_client import EtcdClient, EtcdError, prefix_range_end
from me2_scheduler.discovery.registry import Publisher, internal_ip, publish_address
from me2_scheduler.discovery.resolver import EndpointWatcher, etcd_conf_from_target
from me2_scheduler.errors import DownstreamError
from me2_scheduler.protos import scheduler_pb2
from me2_scheduler.storage.migrations import apply_migrations
from me2_scheduler.supervisor.child import ChildContext
from me2_scheduler.workers import diary
from me2_scheduler.workers.diary import DiaryScheduler, parse_schedule

from .e2e import wait_until

pytestmark = pytest.mark.timeout(240)
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(root=temp_root("me2-etcd-")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def key() -> str:
    """A service name no other test uses."""
    return f"svc{uuid.uuid4().hex[:8]}.rpc"


@pytest.fixture
def client(etcd: EtcdServer) -> Iterator[EtcdClient]:
    with EtcdClient(EtcdConf(hosts=(etcd.address,), key="unused")) as etcd_client:
        yield etcd_client


@pytest.fixture
def simulators() -> Iterator[list[RunningSimulator]]:
    """Two Action simulators on free ports."""
    running = [serve(ActionSimulator(seed=i), "127.0.0.1:0") for i in range(2)]
    yield running
    for simulator in running:
        simulator.stop(0)  # a second stop is harmless


def answers(call: Callable[..., object], *args: object) -> bool:
    """Whether ``call(*args)`` succeeds (etcd may still be starting)."""
    try:
        call(*args)
    except EtcdError:
        return False
    return True


def calls_seen(simulator: RunningSimulator) -> int:
    with SimulatorControl(simulator.address) as control:
        return control.stats().total


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
    assert (conf.hosts, conf.key, conf.user, conf.password, conf.id) == (
        ("10.0.0.1:2379", "10.0.0.2:2379"), "action.rpc", "u", "p", 0,
    )  # fmt: skip


# --- registration -------------------------------------------------------------------------


def test_registration_is_key_slash_lease_id_with_a_ten_second_lease(etcd, client, key):
    publisher = Publisher(EtcdConf(hosts=(etcd.address,), key=key), "127.0.0.1:4321")
    publisher.start()
    try:
        found, _ = client.get_prefix(f"{key}/")
        lease_id = publisher.lease_id
        assert found == {f"{key}/{lease_id}": "127.0.0.1:4321"}
        assert client.get(f"{key}/{lease_id}").lease == lease_id
        remaining, granted = client.time_to_live(lease_id)
        assert granted == 10
        assert 0 < remaining <= 10
        assert (
            etcd.ctl("get", f"{key}/{lease_id}", "--print-value-only").strip() == "127.0.0.1:4321"
        )
    finally:
        publisher.stop()


def test_registration_with_an_id_uses_the_id_as_the_key_suffix(etcd, client, key):
    publisher = Publisher(EtcdConf(hosts=(etcd.address,), key=key, id=42), "127.0.0.1:4321")
    publisher.start()
    try:
        assert client.get_prefix(f"{key}/")[0] == {f"{key}/42": "127.0.0.1:4321"}
        assert client.get(f"{key}/42").lease == publisher.lease_id
    finally:
        publisher.stop()


def test_a_deleted_registration_is_put_back_on_the_same_lease(etcd, client, key):
    publisher = Publisher(EtcdConf(hosts=(etcd.address,), key=key), "127.0.0.1:4321")
    publisher.start()
    try:
        registered, lease_id = publisher.key, publisher.lease_id
        assert etcd.ctl("del", registered).strip() == "1"
        back = wait_until(lambda: client.get(registered), 5, "the key to come back")
        assert (back.value, back.lease) == (b"127.0.0.1:4321", lease_id)
    finally:
        publisher.stop()


def test_a_lost_lease_is_replaced_and_the_service_registered_again(etcd, client, key):
    publisher = Publisher(EtcdConf(hosts=(etcd.address,), key=key), "127.0.0.1:4321")
    publisher.start()
    try:
        lost = publisher.lease_id
        client.revoke(lost)  # what etcd does when keepalives stop for a whole TTL
        found = wait_until(
            lambda: {
                k: v for k, v in client.get_prefix(f"{key}/")[0].items() if str(lost) not in k
            },
            5,
            "a registration on a new lease",
        )
        assert found == {f"{key}/{publisher.lease_id}": "127.0.0.1:4321"}
        assert publisher.lease_id != lost
        assert client.time_to_live(publisher.lease_id)[1] == 10
    finally:
        publisher.stop()


def test_stopping_revokes_the_lease_so_the_key_is_gone_at_once(etcd, client, key):
    publisher = Publisher(EtcdConf(hosts=(etcd.address,), key=key), "127.0.0.1:4321")
    publisher.start()
    lease_id = publisher.lease_id
    publisher.stop()
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
        publisher = Publisher(conf, "127.0.0.1:4321")
        publisher.start()
        try:
            listed = server.ctl("get", "--prefix", f"{key}/", user="root:s3cret-pass")
            assert f"{key}/{publisher.lease_id}\n127.0.0.1:4321" in listed
        finally:
            publisher.stop()
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
    publisher, watcher = Publisher(conf, "127.0.0.1:4321"), EndpointWatcher(conf)
    try:
        publisher.start()
        watcher.start()
        wait_until(lambda: watcher.endpoints() == ("127.0.0.1:4321",), 5, "discovery")
        server.stop()
        server.start()  # same data dir and ports
        with EtcdClient(conf) as client:
            wait_until(lambda: answers(client.put, f"{key}/other", "127.0.0.1:5555"), 15, "etcd")
            # the put is a change only a new watch sees
            wait_until(lambda: len(watcher.endpoints()) == 2, 15, "the watch to resume")
            assert client.get_prefix(f"{key}/")[0][publisher.key] == "127.0.0.1:4321"
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
        conf = EtcdConf(hosts=(server.address,), key=key, ca_file=pki.ca.cert,
                        cert_file=pki.client.cert, cert_key_file=pki.client.key)  # fmt: skip
        publisher = Publisher(conf, "127.0.0.1:4321")
        publisher.start()
        try:
            with EtcdClient(conf) as client:
                assert client.get_prefix(f"{key}/")[0] == {publisher.key: "127.0.0.1:4321"}
        finally:
            publisher.stop()
        untrusted = replace(
            conf, cert_file=pki.other_client.cert, cert_key_file=pki.other_client.key
        )
        with pytest.raises(EtcdError):
            Publisher(untrusted, "h:1").start()
    finally:
        server.stop()


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


# --- the whole service ---------------------------------------------------------------------


SERVICE_CONFIG = """\
Name: scheduler.rpc
Mode: test
ListenOn: 127.0.0.1:{rpc_port}
Timezone: UTC
Etcd:
  Hosts: [{etcd_hosts}]
  Key: {key}
Mysql:
  DataSource: root@tcp(127.0.0.1:{mysql_port})/{database}?charset=utf8mb4&parseTime=true
Redis:
  Host: 127.0.0.1:{redis_port}
  Key: {redis_key}
ActionRpc:
  Target: etcd://{etcd_hosts}/{action_key}
DiaryRpc:
  Target: etcd://{etcd_hosts}/{key}.diary
Schedule:
  MaxWorkers: 1
  ShutdownTimeoutSeconds: 15
DiarySchedule:
  CronExpression: "0 3 1 1 *"
"""


def start_registered_service(tmp_path, mariadb, redis_server, database, redis_key, etcd_hosts, key,
                             action_key) -> tuple[Service, int]:  # fmt: skip
    """``me2-scheduler run`` registered as ``key``, finding Action as ``action_key``.

    Intervals are the default hours, so the only Action calls are the test's triggers.
    """
    rpc_port = free_port()
    text = SERVICE_CONFIG.format(
        rpc_port=rpc_port, etcd_hosts=etcd_hosts, key=key, mysql_port=mariadb.port,
        database=database, redis_port=redis_server.port, redis_key=redis_key,
        action_key=action_key,
    )  # fmt: skip
    config_path = tmp_path / f"scheduler-{next(_ids)}.yaml"
    config_path.write_text(text)
    subprocess.run(cli_argv("init-db", "-f", str(config_path)), check=True, capture_output=True)
    return Service(config_path, tmp_path).start(name=config_path.stem), rpc_port


@pytest.fixture
def service_env(tmp_path, mariadb, redis_server, database, redis_key):
    started: list[Service] = []

    def start(etcd_hosts: str, key: str, action_key: str = "action.rpc") -> tuple[Service, int]:
        service, port = start_registered_service(
            tmp_path, mariadb, redis_server, database, redis_key, etcd_hosts, key, action_key
        )
        started.append(service)
        return service, port

    yield start
    for service in started:
        service.stop()


def test_service_registers_itself_calls_action_through_etcd_and_unregisters_on_stop(
    etcd, client, key, service_env, simulators
):
    action_key = f"{key}.action"
    client.put(f"{action_key}/1", simulators[0].address)
    service, rpc_port = service_env(etcd.address, key, action_key)
    service.wait_ready()
    found = wait_until(lambda: client.get_prefix(f"{key}/")[0], 10, "the registration")
    [(registered, value)] = found.items()
    lease_id = int(registered.removeprefix(f"{key}/"))
    assert value == f"127.0.0.1:{rpc_port}"
    assert client.get(registered).lease == lease_id
    assert client.time_to_live(lease_id)[1] == 10

    import grpc

    from me2_scheduler.protos import scheduler_pb2_grpc

    with grpc.insecure_channel(value) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        assert (
            stub.EnableAvatarSchedule(
                scheduler_pb2.EnableAvatarScheduleRequest(avatar_id=7), timeout=10
            ).code
            == 0
        )
        reply = stub.TriggerSchedule(scheduler_pb2.TriggerScheduleRequest(avatar_id=7), timeout=10)
    assert reply.code == 0, reply.message
    assert calls_seen(simulators[0]) == 1  # hours-long intervals: the trigger is the only call

    service.process.signal(signal.SIGTERM)
    service.process.wait_for_output(r"etcd: unregistered", 30)
    wait_until(lambda: not client.get_prefix(f"{key}/")[0], 2, "the key gone at once")
    assert service.process.proc.wait(30) == 0


def test_a_killed_service_disappears_from_etcd_within_the_ttl(etcd, client, key, service_env):
    service, _ = service_env(etcd.address, key)
    service.wait_ready()
    wait_until(lambda: client.get_prefix(f"{key}/")[0], 10, "the registration")
    service.process.signal(signal.SIGKILL)
    wait_until(lambda: not client.get_prefix(f"{key}/")[0], 15, "the lease to expire")


def test_a_service_that_cannot_register_stops_with_cannot_boot(key, service_env):
    service, _ = service_env(f"127.0.0.1:{free_port()}", key)
    assert service.process.proc.wait(60) == 3
    assert "cannot register in etcd" in service.process.output()


# --- the seed's own config: DiaryRpc found as diary.rpc in ActionRpc's etcd ------------------

SEED_YAML = Path(__file__).resolve().parents[1] / "etc" / "scheduler-dev.yaml"
SEED_ETCD, SEED_MYSQL = "127.0.0.1:2379", "root:123456@tcp(127.0.0.1:3306)/me2?"


@pytest.fixture
def diary_simulator() -> Iterator[RunningSimulator]:
    running = serve(DiarySimulator(), "127.0.0.1:0")
    yield running
    running.stop(0)


def seed_config_on(tmp_path: Path, etcd: EtcdServer, data_source: str) -> Config:
    """The seed's YAML as it is, but for its etcd and MySQL addresses (the test servers')."""
    text = SEED_YAML.read_text(encoding="utf-8")
    assert text.count(SEED_ETCD) == 2 and text.count(SEED_MYSQL) == 1
    text = text.replace(SEED_ETCD, etcd.address).replace(SEED_MYSQL, data_source + "?")
    path = tmp_path / "scheduler-dev.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path))


def test_the_seed_config_writes_diaries_through_diary_rpc_in_action_rpcs_etcd(
    etcd, client, tmp_path, mariadb, database, diary_simulator, caplog
):
    config = seed_config_on(tmp_path, etcd, f"root@tcp(127.0.0.1:{mariadb.port})/{database}")
    apply_migrations(config.mysql)
    for avatar_id in (1, 2, 3):
        mariadb.query(
            database,
            "INSERT INTO avatar_schedules (avatar_id, status, next_schedule_time)"
            " VALUES (%s, 'active', '2024-01-01 00:00:00')",
            (avatar_id,),
        )
    client.put("diary.rpc/7587881234567", diary_simulator.address)  # as go-zero registers
    caplog.set_level(logging.INFO, logger="me2_scheduler.diary")
    stopped = ChildContext("diary", 0)
    stopped.stop.set()
    try:
        assert diary.main(config, stopped) == 0  # logs where diaries go, then stops at once
        fire = parse_schedule(config).next(datetime(2024, 6, 1, tzinfo=timezone.utc))
        scheduler = DiaryScheduler(config, clock=lambda: fire)
        try:
            result = scheduler.run_due(fire + timedelta(seconds=1))
        finally:
            scheduler.close()
    finally:
        client.delete("diary.rpc/7587881234567")

    assert result is not None and result.result == "done"
    assert (result.checkpoint.success, result.checkpoint.failure) == (3, 0)
    day = fire.astimezone(parse_schedule(config).tz).date().isoformat()
    with SimulatorControl(diary_simulator.address) as control:
        assert control.stats().calls_per_key == {f"{i}:{day}": 1 for i in (1, 2, 3)}
    lines = [r.getMessage() for r in caplog.records if r.name == "me2_scheduler.diary"]
    source = f"etcd diary.rpc on {etcd.address} (derived from ActionRpc.Etcd)"
    assert f"[DiaryScheduler] DiaryRpc: {source}" in lines
