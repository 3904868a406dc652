"""The supervisor as a real process tree: titles, restarts, backoff, shutdown, orphans, logs.

Each service test runs ``tests/fixtures_supervisor.py`` as a subprocess (the
supervisor) with dummy roles; every pid it or its children had is recorded and
SIGKILLed at teardown if still alive, so no test leaves a process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from me2_devkit.testing.stack import pid_alive
from me2_scheduler.supervisor.child import EXIT_CANNOT_BOOT

from .support import wait_until

FIXTURES = Path(__file__).with_name("fixtures_supervisor.py")
DATA_DIR_ENV = "ME2_SUPERVISOR_TEST_DIR"
WAIT_S = 15.0  # generous deadline for anything that should happen "soon"


def role(name: str, target: str, count: int = 1, stop_order: int = 1) -> dict:
    target = f"fixtures_supervisor:{target}"
    return {"name": name, "target": target, "count": count, "stop_order": stop_order}


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
        return wait_until(
            lambda: len(self.starts()) >= count and self.starts(), WAIT_S, f"{count} starts"
        )

    def wait_for_log(self, pattern: str, count: int = 1) -> list[re.Match]:
        def found() -> list[re.Match]:
            matches = list(re.finditer(pattern, self.log(), re.MULTILINE))
            return matches if len(matches) >= count else []

        return wait_until(found, WAIT_S, f"{count} log line(s) matching {pattern!r}")

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"supervisor still running after {timeout}s:\n{self.log()}")

    def living_children(self) -> list[int]:
        self.starts()
        return [pid for pid in self.children_seen if pid_alive(pid)]


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


# --- the process tree --------------------------------------------------------


def test_every_child_starts_with_its_role_in_the_process_title(start_service) -> None:
    service = start_service(
        [role("poller", "looping", 1, 0), role("worker", "looping", 2)],
        preflight="fixtures_supervisor:preflight_ok",
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
    assert pid_alive(second)  # the sibling was left alone
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
    wait_until(lambda: (service.data / "busy").exists(), WAIT_S, "the job to start")
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
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 2.0, "every child to die")


def test_a_failing_preflight_exits_1_and_starts_no_role(start_service) -> None:
    service = start_service(
        [role("worker", "looping", 2)], preflight="fixtures_supervisor:preflight_unreachable"
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
