"""The supervisor as a real process tree: titles, restarts, backoff, shutdown, orphans, logs.

Each service test runs ``tests/supervisor_fixtures.py`` as a subprocess (the
supervisor) with dummy roles; every pid it or its children had is recorded and
SIGKILLed at teardown if still alive, so no test leaves a process behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from me2_scheduler.config import Config, LogConf, ScheduleConf
from me2_scheduler.errors import ConfigError
from me2_scheduler.logs import JsonFormatter, PlainFormatter, setup_logging
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT
from me2_scheduler.supervisor.roles import (
    STOP_DRAIN,
    STOP_FIRST,
    STOP_LAST,
    RoleSpec,
    check_unique,
    default_roles,
)
from me2_scheduler.supervisor.slots import Backoff, SlotTable, describe_status, stop_stages

FIXTURES = Path(__file__).with_name("supervisor_fixtures.py")
DATA_DIR_ENV = "ME2_SUPERVISOR_TEST_DIR"
WAIT_S = 15.0  # generous deadline for anything that should happen "soon"
TS_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def role(name: str, target: str, count: int = 1, stop_order: int = 1) -> dict:
    target = f"supervisor_fixtures:{target}"
    return {"name": name, "target": target, "count": count, "stop_order": stop_order}


def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


@dataclass
class Service:
    """A running supervisor subprocess, its stderr log and its children's start records."""

    proc: subprocess.Popen
    log_path: Path
    data: Path
    children_seen: set[int] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def starts(self) -> list[tuple[str, int, int]]:
        path = self.data / "starts"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [(r, int(i), int(p)) for r, i, p in (line.split() for line in lines)]
        self.children_seen.update(pid for _, _, pid in found)
        return found

    def wait_for_starts(self, count: int) -> list[tuple[str, int, int]]:
        return wait_until(lambda: len(self.starts()) >= count and self.starts(), f"{count} starts")

    def wait_for_log(self, pattern: str, count: int = 1) -> list[re.Match]:
        def found() -> list[re.Match]:
            matches = list(re.finditer(pattern, self.log(), re.MULTILINE))
            return matches if len(matches) >= count else []

        return wait_until(found, f"{count} log line(s) matching {pattern!r}")

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"supervisor still running after {timeout}s:\n{self.log()}")

    def living_children(self) -> list[int]:
        self.starts()
        return [pid for pid in self.children_seen if is_alive(pid)]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start supervisors from specs; at teardown SIGKILL any of their processes still alive."""
    services: list[Service] = []

    def start(roles: list[dict], **spec: object) -> Service:
        data = tmp_path / f"svc{len(services)}"
        data.mkdir()
        spec_path = data / "spec.json"
        spec_path.write_text(json.dumps({"roles": roles, **spec}))
        log_path = data / "supervisor.log"
        argv = [sys.executable, str(FIXTURES), str(spec_path)]
        env = {**os.environ, DATA_DIR_ENV: str(data)}
        with open(log_path, "wb") as log_file:
            out = {"stdout": log_file, "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL}
            proc = subprocess.Popen(argv, env=env, **out)
        services.append(Service(proc, log_path, data))
        return services[-1]

    yield start
    for service in services:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(WAIT_S)
        for pid in service.living_children():
            if "me2-scheduler:" in cmdline(pid):  # still ours, not a reused pid
                os.kill(pid, signal.SIGKILL)


# --- pure parts --------------------------------------------------------------


def test_default_roles_run_max_workers_workers_and_stop_the_poller_first() -> None:
    roles = {r.name: r for r in default_roles(Config(schedule=ScheduleConf(max_workers=7)))}
    assert set(roles) == {"poller", "worker", "diary", "rpc_server"}
    assert roles["worker"].count == 7
    assert roles["poller"].stop_order < roles["worker"].stop_order
    assert roles["worker"].stop_order == roles["diary"].stop_order
    assert roles["diary"].stop_order < roles["rpc_server"].stop_order


def test_role_specs_reject_a_bad_target_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="module:function"):
        RoleSpec("poller", "no_colon_here")
    with pytest.raises(ValueError, match="duplicate role names: worker"):
        check_unique([RoleSpec("worker", "m:f"), RoleSpec("worker", "m:g")])


@pytest.mark.parametrize(
    ("previous", "ran_for", "expected"),
    [
        (None, 0.0, 0.5),  # first restart
        (0.5, 1.0, 1.0),  # doubles
        (16.0, 1.0, 30.0),  # capped
        (30.0, 1.0, 30.0),  # stays at the cap
        (30.0, 60.0, 0.5),  # a healthy run resets it
    ],
)
def test_backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run(
    previous: float | None, ran_for: float, expected: float
) -> None:
    assert Backoff(initial=0.5, cap=30.0, healthy_after=60.0).next_delay(previous, ran_for) == (
        expected
    )


def test_exit_status_is_described_by_code_or_signal_name() -> None:
    _, status = os.waitpid(_spawn_exit(4), 0)
    assert describe_status(status) == "exited with code 4"
    _, status = os.waitpid(_spawn_kill_self(), 0)
    assert describe_status(status) == "killed by SIGKILL"


def table(*roles: RoleSpec) -> SlotTable:
    return SlotTable(roles, Backoff(initial=0.5, cap=30.0, healthy_after=60.0))


def test_a_slot_table_has_one_slot_per_child_all_down_until_started() -> None:
    slots = table(RoleSpec("poller", "m:f"), RoleSpec("worker", "m:f", 3))
    assert [slot.label for slot in slots.slots] == [
        "poller[0]",
        "worker[0]",
        "worker[1]",
        "worker[2]",
    ]
    assert slots.down() == ["poller[0]", "worker[0]", "worker[1]", "worker[2]"]
    slots.started(slots.slots[1], 101, now=5.0)
    assert slots.down() == ["poller[0]", "worker[1]", "worker[2]"]
    assert slots.live() == [slots.slots[1]]


def test_an_exited_child_frees_its_slot_and_a_stranger_pid_is_ignored() -> None:
    slots = table(RoleSpec("worker", "m:f", 2))
    worker = slots.slots[0]
    slots.started(worker, 101, now=5.0)
    assert slots.exited(999, 0) is None
    assert slots.exited(101, 256) is worker
    assert (worker.pid, worker.status, slots.live()) == (None, 256, [])


def test_a_restart_waits_out_the_backoff_and_shortens_the_loops_sleep() -> None:
    slots = table(RoleSpec("worker", "m:f", 2))
    worker = slots.slots[0]
    slots.started(worker, 101, now=10.0)
    slots.exited(101, 256)
    assert slots.schedule_restart(worker, now=11.0) == 0.5
    assert slots.next_timeout(11.0, tick=1.0) == 0.5
    assert slots.due(11.4) == []
    assert slots.due(11.5) == [worker]
    slots.started(worker, 102, now=11.5)
    slots.exited(102, 256)
    assert slots.schedule_restart(worker, now=12.0) == 1.0  # died at once again: doubled
    assert slots.restarts == {"worker": 2}
    slots.started(worker, 103, now=13.0)
    assert slots.next_timeout(13.0, tick=1.0) == 1.0  # nothing pending: the tick


def test_stop_stages_go_by_stop_order_and_hold_only_live_children() -> None:
    slots = table(
        RoleSpec("rpc_server", "m:f", 1, STOP_LAST),
        RoleSpec("worker", "m:f", 2, STOP_DRAIN),
        RoleSpec("poller", "m:f", 1, STOP_FIRST),
    )
    for pid, slot in enumerate(slots.slots, start=100):
        slots.started(slot, pid, now=0.0)
    stages = stop_stages(slots.slots)
    assert [s.label for s in next(stages)] == ["poller[0]"]
    slots.exited(102, 0)  # worker[1] died while the poller stopped
    assert [s.label for s in next(stages)] == ["worker[0]"]
    assert [s.label for s in next(stages)] == ["rpc_server[0]"]
    assert next(stages, None) is None


def _spawn_exit(code: int) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return pid


def _spawn_kill_self() -> int:
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return pid


def _record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.INFO, "executor.py", 88, message, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_plain_log_line_keeps_the_seed_content_verbatim_and_adds_role_fields() -> None:
    record = _record("[TaskExecutor] 开始调度分身: %d", 42, avatar_id=42)
    line = PlainFormatter("worker[3]", None).format(record)
    fields = line.split("\t")
    assert re.fullmatch(TS_RE, fields[0])
    assert fields[1:3] == ["info", "[TaskExecutor] 开始调度分身: 42"]
    pid = f"pid={os.getpid()}"
    assert fields[3:] == ["role=worker[3]", pid, "avatar_id=42", "caller=executor.py:88"]


def test_plain_traceback_follows_the_fields_so_the_first_line_names_the_role() -> None:
    record = _record("worker[3] crashed", exc=True)
    first, *rest = PlainFormatter("worker[3]", None).format(record).splitlines()
    assert first.split("\t")[2:5] == ["worker[3] crashed", "role=worker[3]", f"pid={os.getpid()}"]
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


def test_json_log_line_has_timestamp_level_content_and_extra_fields() -> None:
    record = _record("分身 %d 调度失败", 7, exc=True, avatar_id=7)
    record.levelno = logging.CRITICAL
    entry = json.loads(JsonFormatter("poller[0]", None).format(record))
    assert re.fullmatch(TS_RE, entry["@timestamp"])
    assert entry["level"] == "severe"
    assert entry["content"].startswith("分身 7 调度失败\nTraceback")
    assert "RuntimeError: boom" in entry["content"]
    assert (entry["role"], entry["pid"], entry["avatar_id"]) == ("poller[0]", os.getpid(), 7)


def test_setup_logging_rejects_an_unknown_level_or_encoding() -> None:
    with pytest.raises(ConfigError, match=r"Log\.Level"):
        setup_logging(LogConf(level="verbose"))
    with pytest.raises(ConfigError, match=r"Log\.Encoding"):
        setup_logging(LogConf(encoding="xml"))


# --- the process tree --------------------------------------------------------


def test_every_child_starts_with_its_role_in_the_process_title(start_service) -> None:
    service = start_service(
        [role("poller", "looping", 1, 0), role("worker", "looping", 2)],
        preflight="supervisor_fixtures:preflight_ok",
    )
    starts = service.wait_for_starts(3)
    assert sorted((r, i) for r, i, _ in starts) == [("poller", 0), ("worker", 0), ("worker", 1)]
    for name, index, pid in starts:
        assert cmdline(pid) == f"me2-scheduler: {name}[{index}]"
        service.wait_for_log(rf"\tinfo\tstarted {re.escape(f'{name}[{index}]')} pid {pid}\t")
    assert (service.data / "preflight").exists()
    service.proc.send_signal(signal.SIGTERM)
    assert service.wait_exit() == 0
    assert service.living_children() == []


def test_a_child_killed_with_sigkill_is_replaced_by_a_new_process(start_service) -> None:
    service = start_service([role("worker", "looping", 2)], backoff={"initial": 0.05})
    (_, _, first), (_, _, second) = sorted(service.wait_for_starts(2))
    os.kill(first, signal.SIGKILL)
    _, index, replacement = service.wait_for_starts(3)[2]
    assert replacement not in (first, second)
    assert index == 0  # the same slot came back
    service.wait_for_log(rf"worker\[0\] pid {first} killed by SIGKILL; restarting in 0\.05s")
    assert json.loads((service.data / "restarts.json").read_text()) == {"worker": 1}
    assert is_alive(second)  # the sibling was left alone
    service.proc.send_signal(signal.SIGTERM)
    assert service.wait_exit() == 0
    assert service.living_children() == []


def test_a_crashing_child_is_restarted_with_a_growing_delay(start_service) -> None:
    service = start_service(
        [role("crasher", "crashing")], backoff={"initial": 0.05, "cap": 0.4, "healthy_after": 60}
    )
    pattern = r"crasher\[0\] pid \d+ exited with code 1; restarting in ([\d.]+)s"
    delays = [float(m.group(1)) for m in service.wait_for_log(pattern, count=6)]
    assert delays[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    assert "crasher[0] crashed: RuntimeError: boom" in service.log()
    assert "Traceback (most recent call last)" in service.log()
    service.proc.send_signal(signal.SIGTERM)
    assert service.wait_exit() == 0


def test_a_child_that_cannot_boot_stops_the_whole_service_with_exit_3(start_service) -> None:
    service = start_service([role("worker", "looping", 2), role("diary", "cannot_boot")])
    assert service.wait_exit() == EXIT_CANNOT_BOOT
    assert "diary[0] pid" in service.log() and "cannot boot" in service.log()
    assert "restarting" not in service.log()
    assert service.living_children() == []


def test_a_role_whose_module_does_not_import_stops_the_service_with_exit_3(start_service) -> None:
    service = start_service([{"name": "ghost", "target": "no_such_module_here:main"}])
    assert service.wait_exit() == EXIT_CANNOT_BOOT
    assert "ghost[0] cannot load no_such_module_here:main" in service.log()


def test_sigterm_lets_a_busy_dispatch_finish_then_exits_0(start_service) -> None:
    service = start_service(
        [role("poller", "looping", 1, 0), role("worker", "busy_dispatch")], shutdown_timeout=30
    )
    wait_until(lambda: (service.data / "busy").exists(), "the job to start")
    service.proc.send_signal(signal.SIGTERM)
    assert service.wait_exit() == 0
    assert (service.data / "finished").read_text() == "stop_seen_during_job=True"
    assert "shutting down" in service.log()
    assert "killing" not in service.log()
    assert service.living_children() == []


def test_stop_stages_run_in_order(start_service) -> None:
    service = start_service(
        [role("poller", "slow_to_stop", 1, 0), role("worker", "checks_first_stopped", 2, 1)]
    )
    service.wait_for_starts(3)
    service.proc.send_signal(signal.SIGTERM)
    assert service.wait_exit() == 0
    assert (service.data / "second_stopped").read_text() == "first_stopped_before=True"


def test_a_child_ignoring_sigterm_is_killed_after_the_shutdown_timeout(start_service) -> None:
    service = start_service(
        [role("worker", "looping"), role("stubborn", "ignoring_stop")], shutdown_timeout=0.5
    )
    service.wait_for_starts(2)
    service.proc.send_signal(signal.SIGTERM)
    assert service.wait_exit() == 0
    service.wait_for_log(r"shutdown timeout \(0\.5s\) reached")
    service.wait_for_log(r"killing stubborn\[0\]")
    service.wait_for_log(r"stubborn\[0\] pid \d+ killed by SIGKILL")
    service.wait_for_log(r"worker\[0\] pid \d+ exited with code 0")
    assert service.living_children() == []


def test_a_second_stop_signal_kills_the_children_at_once(start_service) -> None:
    service = start_service([role("stubborn", "ignoring_stop")], shutdown_timeout=600)
    service.wait_for_starts(1)
    service.proc.send_signal(signal.SIGTERM)
    service.wait_for_log("shutting down")
    service.proc.send_signal(signal.SIGINT)
    assert service.wait_exit() == 0
    service.wait_for_log(r"second stop signal")
    assert service.living_children() == []


def test_children_die_when_the_supervisor_is_killed_with_sigkill(start_service) -> None:
    service = start_service(
        [role("poller", "looping", 1, 0), role("worker", "looping", 2), role("x", "ignoring_stop")]
    )
    pids = [pid for _, _, pid in service.wait_for_starts(4)]
    service.proc.kill()
    service.proc.wait(WAIT_S)
    wait_until(lambda: not any(is_alive(pid) for pid in pids), "every child to die", timeout=2.0)


def test_a_failing_preflight_exits_1_and_starts_no_role(start_service) -> None:
    service = start_service(
        [role("worker", "looping", 2)], preflight="supervisor_fixtures:preflight_unreachable"
    )
    assert service.wait_exit() == 1
    assert "error: MySQL 127.0.0.1:1 is unreachable" in service.log()
    assert "preflight failed; not starting the service (exit 1)" in service.log()
    assert "started worker" not in service.log()
    assert service.starts() == []


def test_json_encoding_writes_one_parseable_object_per_line(start_service) -> None:
    service = start_service([role("worker", "looping")], encoding="json")
    service.wait_for_log(r'"content": "worker\[0\] idling"')
    service.proc.send_signal(signal.SIGTERM)
    assert service.wait_exit() == 0
    entries = [json.loads(line) for line in service.log().splitlines()]
    assert all({"@timestamp", "level", "content", "role", "pid"} <= set(e) for e in entries)
    by_content = {e["content"]: e for e in entries}
    [(_, _, child_pid)] = service.starts()
    assert by_content["worker[0] idling"]["role"] == "worker[0]"
    assert by_content["worker[0] idling"]["pid"] == child_pid
    assert by_content["worker[0] idling"]["avatar_id"] == 42
    assert by_content["shutting down"]["role"] == "supervisor"
    assert by_content["shutting down"]["pid"] == service.proc.pid
