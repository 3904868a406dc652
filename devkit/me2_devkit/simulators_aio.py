"""The simulators on a ``grpc.aio`` server: the standalone process (``me2-dev simulate``).

The sync server in ``simulators`` holds a thread for every call in flight,
asleep on an event; the benchmark holds hundreds at once, and their
switching costs CPU the service being measured competes for on a small box.
Here every call is a task on one asyncio loop that awaits its latency (or,
for a hang, the caller's deadline or cancel, which grpc delivers as a
cancellation of the task). With 400 calls in flight at 200 ms latency on
2 cores it spent about 0.31 ms of CPU per call against 0.39 ms for the sync
server, with 8 threads instead of 409.

A front wraps a sync simulator instance and keeps no logic of its own:
admission, counting, the failure rolls, the remembered answers and Control
are the instance's, so both transports answer alike and a subclass that
overrides one of those steps (``ClockedActionSimulator._count``) is served
the same way. Only the wait and ``context.abort`` are awaited here. A
subclass's override of the handler method itself (``ScheduleAction``) is not
used: the front calls the steps, not the sync handler.

A caller gone while its call waits cancels the call's task: the call counts
as done (it leaves the calls in flight) and nobody receives an answer, as
the sync server's empty one goes nowhere either.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc

from me2_devkit.protos import simulator_pb2_grpc
from me2_devkit.simulators import (
    OVER_CAPACITY,
    ActionSimulator,
    Bound,
    DiarySimulator,
    _Call,
    _Simulator,
    listen_host,
)
from me2_scheduler.protos import action_pb2_grpc, diary_pb2_grpc


class AioSimulator(simulator_pb2_grpc.ControlServicer):
    """The async front of one simulator instance: its service and Control, awaiting only the
    wait and the abort."""

    def __init__(self, simulator: _Simulator) -> None:
        self.simulator = simulator

    @property
    def name(self) -> str:
        return self.simulator.name

    def _add_service(self, server: grpc.aio.Server) -> None:
        """Register the simulated service (not Control) on ``server``: a subclass sets it to
        the service's ``add_<Service>Servicer_to_server``."""
        raise NotImplementedError

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the simulated service and Control on ``server``."""
        simulator_pb2_grpc.add_ControlServicer_to_server(self, server)
        self._add_service(server)

    async def _serve(self, context: grpc.aio.ServicerContext, call: _Call) -> Any:
        """The steps of ``_Simulator._serve``, awaiting the wait and the abort.

        A caller gone meanwhile cancels this task; ``finally`` still leaves.
        """
        simulator = self.simulator
        if not simulator._admit():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVER_CAPACITY)
        try:
            simulator._count(call.avatar_id, call.key)
            await _pause(simulator._pause_s(call.avatar_id))
            return simulator._answer(call)
        finally:
            simulator._leave()

    async def _handle(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The simulated service's one method: admit, count, await the latency, then answer
        as the instance does (act, fail, repeat the first answer; write)."""
        return await self._serve(context, self.simulator._call(request))

    # Control: the instance's own handlers, which never wait; the context is unused there.
    async def Stats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Counts since start or the last Reset."""
        return self.simulator.Stats(request, context)

    async def Configure(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Change behaviour; unset fields keep their value."""
        return self.simulator.Configure(request, context)

    async def Reset(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Forget counts and remembered answers; the peak restarts from the calls in flight."""
        return self.simulator.Reset(request, context)


async def _pause(pause_s: float | None) -> None:
    """Wait ``pause_s`` seconds (0: not at all), or until cancelled when None (a hang)."""
    if pause_s is None:
        await asyncio.get_running_loop().create_future()  # never set: ends by cancellation
    elif pause_s > 0:
        await asyncio.sleep(pause_s)


class AioActionSimulator(AioSimulator, action_pb2_grpc.ActionServicer):
    """``ActionSimulator`` served by the aio front."""

    simulator: ActionSimulator
    _add_service = action_pb2_grpc.add_ActionServicer_to_server
    ScheduleAction = AioSimulator._handle


class AioDiarySimulator(AioSimulator, diary_pb2_grpc.DiaryServicer):
    """``DiarySimulator`` served by the aio front."""

    simulator: DiarySimulator
    _add_service = diary_pb2_grpc.add_DiaryServicer_to_server
    GenerateAvatarDiary = AioSimulator._handle


def aio_front(simulator: _Simulator) -> AioSimulator:
    """The async front for ``simulator`` (an Action or Diary simulator, or a subclass)."""
    if isinstance(simulator, ActionSimulator):
        return AioActionSimulator(simulator)
    if isinstance(simulator, DiarySimulator):
        return AioDiarySimulator(simulator)
    raise TypeError(f"no aio front for {type(simulator).__name__}")


@dataclass
class RunningAioSimulator(Bound):
    """A started aio simulator server and the address it really listens on."""

    server: grpc.aio.Server
    front: AioSimulator = field(repr=False)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving; in-flight calls get ``grace`` seconds, hanging ones are cancelled."""
        await self.server.stop(grace)


async def serve_aio(simulator: _Simulator, listen: str) -> RunningAioSimulator:
    """Start a ``grpc.aio`` server for ``simulator`` on ``listen`` (port 0 picks a free one).

    Calls in flight are tasks, not threads: nothing bounds how many wait at
    once but the simulator's own ``capacity``. Call it on the loop that is
    to serve. Raises ``click.UsageError`` when ``listen`` is not host:port,
    and ``RuntimeError`` when the address cannot be bound.
    """
    host = listen_host(listen)
    server = grpc.aio.server()
    front = aio_front(simulator)
    front.add_to_server(server)
    bound = server.add_insecure_port(listen)
    await server.start()
    return RunningAioSimulator(server=server, host=host, port=bound, front=front)
