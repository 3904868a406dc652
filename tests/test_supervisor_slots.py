"""The supervisor's pure parts: role specs, restart backoff, exit statuses, the slot table
and the stop stages."""

from __future__ import annotations

import os
import signal

import pytest

from me2_scheduler.config import Config, ScheduleConf
from me2_scheduler.supervisor.roles import (
    STOP_DRAIN,
    STOP_FIRST,
    STOP_LAST,
    RoleSpec,
    check_unique,
    default_roles,
)
from me2_scheduler.supervisor.slots import Backoff, SlotTable, describe_status, stop_stages


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
