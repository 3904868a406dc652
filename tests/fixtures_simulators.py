"""Helpers of the client and simulator tests: configs, running simulators, CLI simulators."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from me2_devkit.simulators import (
    RunningSimulator,
    serve,
)
from me2_scheduler.clients import ActionClient
from me2_scheduler.config import RpcClientConf
from me2_scheduler.protos import action_pb2, action_pb2_grpc, diary_pb2, diary_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DATE = "2025-01-02"


def conf(*endpoints: str, timeout_ms: int = 2000) -> RpcClientConf:
    return RpcClientConf(endpoints=endpoints, timeout_ms=timeout_ms)


@contextmanager
def running(servicer) -> Iterator[RunningSimulator]:
    sim = serve(servicer, "127.0.0.1:0")
    try:
        yield sim
    finally:
        sim.stop(grace=0)


@contextmanager
def action_client(address: str, timeout_ms: int = 2000) -> Iterator[ActionClient]:
    client = ActionClient(conf(address, timeout_ms=timeout_ms))
    try:
        yield client
    finally:
        client.close()


@contextmanager
def cli_simulator(kind: str, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start ``me2-dev simulate <kind>`` on a free port; yield it and its address."""
    dev_cli = [sys.executable, "-m", "me2_devkit.cli"]
    argv = [*dev_cli, "simulate", kind, "--listen", "127.0.0.1:0", *args]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = read_line(proc, deadline_s=30)
        prefix = f"{kind} simulator listening on "
        assert line.startswith(prefix), line
        yield proc, line.removeprefix(prefix).strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def read_line(proc: subprocess.Popen, deadline_s: float) -> str:
    """The first stdout line of ``proc``, or fail with its stderr."""
    ready, _, _ = select.select([proc.stdout], [], [], deadline_s)
    if not ready:
        pytest.fail(f"simulator printed nothing in {deadline_s}s")
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"simulator exited with {proc.wait(5)}: {proc.stderr.read()[-2000:]}")
    return line


@contextmanager
def hanging_calls(address: str, count: int, kind: str = "action") -> Iterator[list]:
    """``count`` Action (or Diary) calls that hang at the simulator until cancelled on exit."""
    channel = grpc.insecure_channel(address)
    if kind == "action":
        call = action_pb2_grpc.ActionStub(channel).ScheduleAction
        requests = [
            action_pb2.ScheduleActionRequest(avatar_id=i, idempotency_key=f"{i}:1")
            for i in range(1, count + 1)
        ]
    else:
        call = diary_pb2_grpc.DiaryStub(channel).GenerateAvatarDiary
        requests = [
            diary_pb2.GenerateAvatarDiaryRequest(avatar_id=i, date=DATE)
            for i in range(1, count + 1)
        ]
    calls = [call.future(request, timeout=60) for request in requests]
    try:
        yield calls
    finally:
        for pending in calls:
            pending.cancel()
        channel.close()
