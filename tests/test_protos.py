"""The protos keep the seed's contract, and the committed generated modules are fresh."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from me2_devkit.protos import simulator_pb2, simulator_pb2_grpc
from me2_scheduler.protos import (
    action_pb2,
    action_pb2_grpc,
    diary_pb2,
    diary_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent.parent
GEN_SCRIPT = ROOT / "scripts" / "gen_protos.py"
SERVICE_PROTOS = ROOT / "me2_scheduler" / "protos"

# The seed's "RPC 接口" section: message -> field -> number.
SEED_FIELDS = {
    "EnableAvatarScheduleRequest": {"avatar_id": 1},
    "EnableAvatarScheduleResponse": {"code": 1, "message": 2, "info": 3},
    "PauseAvatarScheduleRequest": {"avatar_id": 1},
    "PauseAvatarScheduleResponse": {"code": 1, "message": 2},
    "ResumeAvatarScheduleRequest": {"avatar_id": 1},
    "ResumeAvatarScheduleResponse": {"code": 1, "message": 2, "info": 3},
    "GetAvatarScheduleStatusRequest": {"avatar_id": 1},
    "GetAvatarScheduleStatusResponse": {"code": 1, "message": 2, "info": 3},
    "TriggerScheduleRequest": {"avatar_id": 1},
    "TriggerScheduleResponse": {"code": 1, "message": 2, "action_type": 3, "action_id": 4},
    "BatchGetScheduleStatusRequest": {"avatar_ids": 1},
    "BatchGetScheduleStatusResponse": {"code": 1, "message": 2, "schedules": 3},
    "ScheduleInfo": {
        "avatar_id": 1,
        "status": 2,
        "next_schedule_time": 3,
        "last_schedule_time": 4,
        "last_action_type": 5,
        "schedule_count": 6,
        "failed_count": 7,
        "created_at": 8,
        "updated_at": 9,
    },
}

# Each takes <Method>Request and returns <Method>Response, as in the seed.
SCHEDULER_METHODS = (
    "EnableAvatarSchedule",
    "PauseAvatarSchedule",
    "ResumeAvatarSchedule",
    "GetAvatarScheduleStatus",
    "TriggerSchedule",
    "BatchGetScheduleStatus",
    "DisableAvatarSchedule",
    "GetAvatarScheduleHistory",
    "SetAvatarSchedulePolicy",
    "GetAvatarSchedulePolicy",
    "SetSchedulePolicies",
)
# Fields added to seed messages, after the seed's numbers (never in their place).
ADDED_TO_SEED = {"ScheduleInfo": {"policy": 10}}


def wire_names(pb2_module, service: str) -> set[str]:
    """``/<package>.<Service>/<Method>`` for every method of ``service``."""
    descriptor = pb2_module.DESCRIPTOR.services_by_name[service]
    return {f"/{descriptor.full_name}/{method.name}" for method in descriptor.methods}


class RecordingChannel:
    """Stands in for a grpc.Channel: records the paths a stub binds."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def unary_unary(self, path: str, **_: object) -> None:
        self.paths.append(path)


def load_gen_script():
    spec = importlib.util.spec_from_file_location("gen_protos", GEN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_generated_modules_match_the_protos():
    done = subprocess.run(
        [sys.executable, str(GEN_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stale generated modules:\n{done.stdout}{done.stderr}"


def test_check_names_a_generated_module_that_differs_from_its_proto(tmp_path):
    gen = load_gen_script()
    copy = tmp_path / "protos"
    shutil.copytree(SERVICE_PROTOS, copy)
    (copy / "diary_pb2.py").write_text("# edited by hand\n")
    (copy / "action_pb2.pyi").unlink()
    stale = gen.stale_files(copy, "me2_scheduler.protos")
    assert sorted(stale) == ["action_pb2.pyi", "diary_pb2.py"]


def test_grpc_modules_import_their_messages_through_the_package():
    gen = load_gen_script()
    source = "import grpc\nimport scheduler_pb2 as scheduler__pb2\n"
    rewritten = gen.make_imports_absolute(source, "me2_scheduler.protos")
    assert rewritten == (
        "import grpc\nfrom me2_scheduler.protos import scheduler_pb2 as scheduler__pb2\n"
    )
    for module in (action_pb2_grpc, diary_pb2_grpc, scheduler_pb2_grpc, simulator_pb2_grpc):
        text = Path(module.__file__).read_text()
        assert "\nimport " + module.__name__.rsplit(".", 1)[1].replace("_grpc", "") not in text


def test_scheduler_wire_names_are_what_go_zero_clients_call():
    expected = {f"/scheduler.Scheduler/{name}" for name in SCHEDULER_METHODS}
    assert wire_names(scheduler_pb2, "Scheduler") == expected
    channel = RecordingChannel()
    scheduler_pb2_grpc.SchedulerStub(channel)
    assert set(channel.paths) == expected


@pytest.mark.parametrize("method", sorted(SCHEDULER_METHODS))
def test_each_scheduler_method_takes_and_returns_its_named_messages(method):
    descriptor = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].methods_by_name[method]
    assert descriptor.input_type.full_name == f"scheduler.{method}Request"
    assert descriptor.output_type.full_name == f"scheduler.{method}Response"


def test_action_and_diary_wire_names():
    assert wire_names(action_pb2, "Action") == {"/action.Action/ScheduleAction"}
    assert wire_names(diary_pb2, "Diary") == {"/diary.Diary/GenerateAvatarDiary"}
    action_channel, diary_channel = RecordingChannel(), RecordingChannel()
    action_pb2_grpc.ActionStub(action_channel)
    diary_pb2_grpc.DiaryStub(diary_channel)
    assert action_channel.paths == ["/action.Action/ScheduleAction"]
    assert diary_channel.paths == ["/diary.Diary/GenerateAvatarDiary"]


@pytest.mark.parametrize("message", sorted(SEED_FIELDS))
def test_seed_messages_keep_their_field_names_and_numbers(message):
    descriptor = scheduler_pb2.DESCRIPTOR.message_types_by_name[message]
    fields = {field.name: field.number for field in descriptor.fields}
    assert fields == SEED_FIELDS[message] | ADDED_TO_SEED.get(message, {})


def test_proto_packages_and_go_packages_match_the_go_services():
    assert scheduler_pb2.DESCRIPTOR.package == "scheduler"
    assert scheduler_pb2.DESCRIPTOR.GetOptions().go_package == "./scheduler"
    assert action_pb2.DESCRIPTOR.package == "action"
    assert diary_pb2.DESCRIPTOR.package == "diary"
    assert simulator_pb2.DESCRIPTOR.package == "simulator"


NEW_FIELDS = {
    "DisableAvatarScheduleRequest": {"avatar_id": 1},
    "DisableAvatarScheduleResponse": {"code": 1, "message": 2, "info": 3},
    "GetAvatarScheduleHistoryRequest": {"avatar_id": 1, "limit": 2, "cursor": 3},
    "GetAvatarScheduleHistoryResponse": {"code": 1, "message": 2, "entries": 3, "next_cursor": 4},
    "SchedulePolicy": {
        "time_zone": 1,
        "windows": 2,
        "min_interval_hours": 3,
        "max_interval_hours": 4,
        "day_rates": 5,
        "quiet_dates": 6,
    },
    "ActiveWindow": {"start": 1, "end": 2, "days": 3},
    "SetAvatarSchedulePolicyRequest": {"avatar_id": 1, "policy": 2},
    "SetAvatarSchedulePolicyResponse": {
        "code": 1,
        "message": 2,
        "policy": 3,
        "info": 4,
        "redrawn": 5,
    },
    "GetAvatarSchedulePolicyRequest": {"avatar_id": 1},
    "GetAvatarSchedulePolicyResponse": {
        "code": 1,
        "message": 2,
        "policy": 3,
        "summary": 4,
        "is_default": 5,
        "effective_time_zone": 6,
        "effective_min_interval_hours": 7,
        "effective_max_interval_hours": 8,
    },
    "SetSchedulePoliciesRequest": {"avatar_ids": 1, "policy": 2},
    "SetSchedulePoliciesResponse": {
        "code": 1,
        "message": 2,
        "updated": 3,
        "redrawn": 4,
        "missing_avatar_ids": 5,
    },
}


@pytest.mark.parametrize("message", sorted(NEW_FIELDS))
def test_added_rpc_messages_have_the_documented_field_numbers(message):
    descriptor = scheduler_pb2.DESCRIPTOR.message_types_by_name[message]
    assert {field.name: field.number for field in descriptor.fields} == NEW_FIELDS[message]


def test_new_messages_have_the_documented_fields():
    history = scheduler_pb2.DESCRIPTOR.message_types_by_name["ScheduleHistoryEntry"]
    assert " ".join(f.name for f in history.fields) == (
        "id avatar_id trigger planned_time started_time finished_time"
        " outcome action_type action_id error lag_seconds"
    )
    request = action_pb2.DESCRIPTOR.message_types_by_name["ScheduleActionRequest"]
    assert {f.name: f.number for f in request.fields} == {
        "avatar_id": 1,
        "idempotency_key": 2,
        "trigger": 3,
    }
    diary = diary_pb2.DESCRIPTOR.message_types_by_name["GenerateAvatarDiaryRequest"]
    assert {f.name: f.number for f in diary.fields} == {"avatar_id": 1, "date": 2}
