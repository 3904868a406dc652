"""Action and Diary simulators: real gRPC servers for tests, the demo and chaos runs.

Each simulator counts every call (per avatar, and per idempotency key or
per ``avatar:date``) so a test can prove that no slot was dispatched twice,
and the calls it handles at once (now, and the peak), so a test or the
benchmark can see how many calls the scheduler holds in flight. It serves a
``simulator.Control`` service on the same port so behaviour (latency,
failures, hangs, a capacity) can be changed while the scheduler runs.

With a ``capacity``, a call beyond it is answered ``RESOURCE_EXHAUSTED`` at
once, as a go-zero service's adaptive shedder answers when it is overloaded:
the scheduler's in-flight limit is seen backing off. Such a call performed
nothing and is counted only as ``rejected``. The server's thread pool
(``max_workers``) must hold every sleeping call: a call waiting for a
thread is not yet counted in flight, so the default is well above what the
benchmark holds in flight (400).
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import click
import grpc

from me2_devkit.simulator_control import SimulatorControl as SimulatorControl
from me2_devkit.simulator_control import SimulatorStats as SimulatorStats
from me2_scheduler.protos import (
    action_pb2,
    action_pb2_grpc,
    diary_pb2,
    diary_pb2_grpc,
    simulator_pb2,
    simulator_pb2_grpc,
)

ACTION_TYPES = ("post", "reply", "like", "comment")
SIMULATED_FAILURE = "simulated failure"
OVER_CAPACITY = "simulator capacity reached"
# Threads of the server: each call in flight holds one while it sleeps.
DEFAULT_MAX_CONCURRENCY = 1024


@dataclass(frozen=True)
class Behaviour:
    """How a simulator answers; changed live through ``Control.Configure``."""

    latency_ms: int = 0
    fail_rate: float = 0.0
    fail_avatars: frozenset[int] = frozenset()
    hang_avatars: frozenset[int] = frozenset()
    hang: bool = False  # every call hangs until the caller's deadline
    capacity: int = 0  # calls handled at once; beyond it RESOURCE_EXHAUSTED (0: unlimited)


class _Simulator(simulator_pb2_grpc.ControlServicer):
    """Counting, configurable behaviour and the Control service, shared by both simulators.

    A simulator is given its behaviour by keyword (``Behaviour``'s fields, and
    ``seed`` for the failure rolls and the answers' randomness).
    """

    name = "simulator"

    def __init__(
        self,
        *,
        latency_ms: int = 0,
        fail_rate: float = 0.0,
        fail_avatars: Iterable[int] = frozenset(),
        hang_avatars: Iterable[int] = frozenset(),
        seed: int | None = None,
        capacity: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.behaviour = Behaviour(
            latency_ms,
            fail_rate,
            frozenset(fail_avatars),
            frozenset(hang_avatars),
            capacity=capacity,
        )
        self._per_avatar: Counter[int] = Counter()
        self._per_key: Counter[str] = Counter()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._rejected = 0
        self._init_memory()

    def _init_memory(self) -> None:
        """Create the simulator's own state; called once, by ``__init__``."""

    def _add_service(self, server: grpc.Server) -> None:
        """Register the simulated service (not Control) on ``server``."""
        raise NotImplementedError

    def add_to_server(self, server: grpc.Server) -> None:
        """Register the simulated service and Control on ``server``."""
        simulator_pb2_grpc.add_ControlServicer_to_server(self, server)
        self._add_service(server)

    def _serve(
        self,
        context: grpc.ServicerContext,
        avatar_id: int,
        key: str,
        response: Callable[..., Any],
        succeed: Callable[[], Any],
    ) -> Any:
        """One simulated call: admit it (or answer RESOURCE_EXHAUSTED), count it under
        ``key``, wait as configured, then fail, or answer what ``succeed`` returns.

        ``response`` is the call's response type: empty when the caller left
        meanwhile, ``code=1`` for a failure (which performed nothing).
        """
        self._admit(context)
        try:
            self._count(avatar_id, key)
            if not self._wait(avatar_id, context):
                return response()
            if self._fails(avatar_id):
                return response(code=1, message=SIMULATED_FAILURE)
            return succeed()
        finally:
            self._leave()

    def _count(self, avatar_id: int, key: str) -> None:
        with self._lock:
            self._per_avatar[avatar_id] += 1
            if key:
                self._per_key[key] += 1

    def _admit(self, context: grpc.ServicerContext) -> None:
        """Take a place among the calls in flight; abort RESOURCE_EXHAUSTED when none is free.

        Raises what ``context.abort`` raises (the call ends there).
        """
        capacity = self.behaviour.capacity
        with self._lock:
            full = 0 < capacity <= self._in_flight
            if full:
                self._rejected += 1
            else:
                self._in_flight += 1
                self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        if full:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVER_CAPACITY)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _wait(self, avatar_id: int, context: grpc.ServicerContext) -> bool:
        """Apply latency or a hang; return False when the caller is gone meanwhile."""
        behaviour = self.behaviour
        hang = behaviour.hang or avatar_id in behaviour.hang_avatars
        if not hang and behaviour.latency_ms <= 0:
            return True
        # Wake as soon as the call ends (deadline, cancel, server stop) so a
        # hang never holds a server thread longer than the caller waits.
        ended = threading.Event()
        if not context.add_callback(ended.set):
            return False
        ended.wait(None if hang else behaviour.latency_ms / 1000)
        return context.is_active()

    def _fails(self, avatar_id: int) -> bool:
        behaviour = self.behaviour
        with self._lock:
            roll = self._rng.random()
        return avatar_id in behaviour.fail_avatars or roll < behaviour.fail_rate

    def Stats(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Counts since start or the last Reset."""
        with self._lock:
            return simulator_pb2.StatsResponse(
                calls_per_avatar=dict(self._per_avatar),
                calls_per_key=dict(self._per_key),
                total=sum(self._per_avatar.values()),
                in_flight=self._in_flight,
                peak_in_flight=self._peak_in_flight,
                rejected=self._rejected,
            )

    def Configure(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Change behaviour; unset fields keep their value."""
        old = self.behaviour
        self.behaviour = Behaviour(  # one assignment: handlers see old or new, never a mix
            latency_ms=request.latency_ms if request.HasField("latency_ms") else old.latency_ms,
            fail_rate=request.fail_rate if request.HasField("fail_rate") else old.fail_rate,
            fail_avatars=frozenset(request.fail_avatars)
            if request.set_fail_avatars
            else old.fail_avatars,
            hang_avatars=frozenset(request.hang_avatars)
            if request.set_hang_avatars
            else old.hang_avatars,
            hang=request.hang if request.HasField("hang") else old.hang,
            capacity=request.capacity if request.HasField("capacity") else old.capacity,
        )
        return simulator_pb2.ConfigureResponse()

    def Reset(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Forget counts and remembered answers; the peak restarts from the calls in flight."""
        with self._lock:
            self._per_avatar.clear()
            self._per_key.clear()
            self._peak_in_flight = self._in_flight
            self._rejected = 0
            self._forget()
        return simulator_pb2.ResetResponse()

    def _forget(self) -> None:
        """Drop per-simulator memory; called under the lock."""


class ActionSimulator(_Simulator, action_pb2_grpc.ActionServicer):
    """Acts for any avatar; a repeated idempotency key gets the first success again."""

    name = "action"

    def _init_memory(self) -> None:
        self._action_ids = itertools.count(1)
        self._answers: dict[str, Any] = {}

    def _add_service(self, server: grpc.Server) -> None:
        action_pb2_grpc.add_ActionServicer_to_server(self, server)

    def ScheduleAction(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Admit the call (or answer RESOURCE_EXHAUSTED), count it, wait as configured,
        then act, fail, or repeat the first answer."""
        key = request.idempotency_key
        act = functools.partial(self._act, key)
        return self._serve(context, request.avatar_id, key, action_pb2.ScheduleActionResponse, act)

    def _act(self, key: str) -> Any:
        # A failure performed nothing, so it is not remembered (``_serve``): a repeat may act.
        with self._lock:
            answer = self._answers.get(key) if key else None
            if answer is None:
                answer = action_pb2.ScheduleActionResponse(
                    code=0,
                    action_type=self._rng.choice(ACTION_TYPES),
                    action_id=next(self._action_ids),
                )
                if key:
                    self._answers[key] = answer
            return answer

    def _forget(self) -> None:
        self._answers.clear()


class DiarySimulator(_Simulator, diary_pb2_grpc.DiaryServicer):
    """Writes any avatar's diary; counts calls per ``avatar_id:date``."""

    name = "diary"

    def _init_memory(self) -> None:
        self._diary_ids = itertools.count(1)

    def _add_service(self, server: grpc.Server) -> None:
        diary_pb2_grpc.add_DiaryServicer_to_server(self, server)

    def GenerateAvatarDiary(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Admit the call (or answer RESOURCE_EXHAUSTED), count it, wait, then write or fail."""
        key = f"{request.avatar_id}:{request.date}"
        response = diary_pb2.GenerateAvatarDiaryResponse
        return self._serve(context, request.avatar_id, key, response, self._write)

    def _write(self) -> Any:
        with self._lock:
            diary_id = next(self._diary_ids)
        return diary_pb2.GenerateAvatarDiaryResponse(code=0, diary_id=diary_id)


@dataclass
class RunningSimulator:
    """A started simulator server and the address it really listens on."""

    server: grpc.Server
    host: str
    port: int
    servicer: _Simulator = field(repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving; in-flight calls get ``grace`` seconds, hanging ones are cancelled."""
        self.server.stop(grace).wait()


def serve(
    servicer: _Simulator, listen: str, max_workers: int = DEFAULT_MAX_CONCURRENCY
) -> RunningSimulator:
    """Start a gRPC server for ``servicer`` on ``listen`` (port 0 picks a free one).

    ``max_workers`` threads handle calls (created as calls need them), so up
    to that many calls are in flight at once; more wait for a thread.
    Raises ``click.UsageError`` when ``listen`` is not host:port, and
    ``RuntimeError`` when the address cannot be bound.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.UsageError(f"--listen {listen!r} is not host:port")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers, thread_name_prefix="sim"))
    servicer.add_to_server(server)
    bound = server.add_insecure_port(listen)
    server.start()
    return RunningSimulator(server=server, host=host, port=bound, servicer=servicer)
