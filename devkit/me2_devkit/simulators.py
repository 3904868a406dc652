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

The servicers here are sync, for in-process ``serve``; ``simulators_aio``
fronts the same instances on a ``grpc.aio`` server (the standalone process),
so a call's steps (admit, count, how long to wait, fail or answer) live here
once and only the waiting differs between the two.
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
from typing import Any, NamedTuple

import click
import grpc

from me2_devkit.protos import simulator_pb2, simulator_pb2_grpc
from me2_devkit.simulator_control import SimulatorControl as SimulatorControl
from me2_devkit.simulator_control import SimulatorStats as SimulatorStats
from me2_scheduler.protos import action_pb2, action_pb2_grpc, diary_pb2, diary_pb2_grpc

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


class _Call(NamedTuple):
    """One simulated call as both transports serve it: whom it counts under, and its answers."""

    avatar_id: int
    key: str  # counted per key; "" counts per avatar only
    response: Callable[..., Any]  # the response type: empty, or ``code=1`` for a failure
    succeed: Callable[[], Any]  # the success answer


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

    def _serve(self, context: grpc.ServicerContext, call: _Call) -> Any:
        """One simulated call: admit it (or answer RESOURCE_EXHAUSTED), count it under
        its key, wait as configured, then fail or succeed (``_answer``).

        The answer is empty when the caller left meanwhile. ``simulators_aio``
        takes the same steps, awaiting the wait and the abort.
        """
        if not self._admit():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVER_CAPACITY)
        try:
            self._count(call.avatar_id, call.key)
            if not self._wait(call.avatar_id, context):
                return call.response()
            return self._answer(call)
        finally:
            self._leave()

    def _count(self, avatar_id: int, key: str) -> None:
        with self._lock:
            self._per_avatar[avatar_id] += 1
            if key:
                self._per_key[key] += 1

    def _admit(self) -> bool:
        """Take a place among the calls in flight; False (counted as rejected) when none is free.

        The caller then aborts RESOURCE_EXHAUSTED; an admitted call must ``_leave``.
        """
        capacity = self.behaviour.capacity
        with self._lock:
            if 0 < capacity <= self._in_flight:
                self._rejected += 1
                return False
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            return True

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _pause_s(self, avatar_id: int) -> float | None:
        """How long a call waits before answering: 0 not at all, None until the caller
        leaves (a hang), else the configured latency."""
        behaviour = self.behaviour
        if behaviour.hang or avatar_id in behaviour.hang_avatars:
            return None
        return max(behaviour.latency_ms, 0) / 1000

    def _wait(self, avatar_id: int, context: grpc.ServicerContext) -> bool:
        """Apply latency or a hang; return False when the caller is gone meanwhile."""
        pause_s = self._pause_s(avatar_id)
        if pause_s == 0:
            return True
        # Wake as soon as the call ends (deadline, cancel, server stop) so a
        # hang never holds a server thread longer than the caller waits.
        ended = threading.Event()
        if not context.add_callback(ended.set):
            return False
        ended.wait(pause_s)
        return context.is_active()

    def _answer(self, call: _Call) -> Any:
        """After the wait: a failure (which performed nothing), or the success answer."""
        if self._fails(call.avatar_id):
            return call.response(code=1, message=SIMULATED_FAILURE)
        return call.succeed()

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
        return self._serve(context, self._call(request))

    def _call(self, request: Any) -> _Call:
        """The call as counted (per idempotency key) and answered; shared with the aio front."""
        key = request.idempotency_key
        act = functools.partial(self._act, key)
        return _Call(request.avatar_id, key, action_pb2.ScheduleActionResponse, act)

    def _act(self, key: str) -> Any:
        # A failure performed nothing, so it is not remembered (``_answer``): a repeat may act.
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
        return self._serve(context, self._call(request))

    def _call(self, request: Any) -> _Call:
        """The call as counted (per ``avatar_id:date``) and answered; shared with the aio front."""
        key = f"{request.avatar_id}:{request.date}"
        return _Call(request.avatar_id, key, diary_pb2.GenerateAvatarDiaryResponse, self._write)

    def _write(self) -> Any:
        with self._lock:
            diary_id = next(self._diary_ids)
        return diary_pb2.GenerateAvatarDiaryResponse(code=0, diary_id=diary_id)


@dataclass
class Bound:
    """Where a started simulator server really listens."""

    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class RunningSimulator(Bound):
    """A started simulator server and the address it really listens on."""

    server: grpc.Server
    servicer: _Simulator = field(repr=False)

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
    host = listen_host(listen)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers, thread_name_prefix="sim"))
    servicer.add_to_server(server)
    bound = server.add_insecure_port(listen)
    server.start()
    return RunningSimulator(server=server, host=host, port=bound, servicer=servicer)


def listen_host(listen: str) -> str:
    """The host of ``listen``; raise ``click.UsageError`` when it is not host:port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.UsageError(f"--listen {listen!r} is not host:port")
    return host
