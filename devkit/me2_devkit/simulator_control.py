"""A client of the simulators' ``simulator.Control`` service, and the stats it reads.

Kept apart from the simulators themselves (``simulators`` re-exports both)
so a test or the benchmark that only reads counts imports no servicer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from me2_devkit.protos import simulator_pb2, simulator_pb2_grpc
from me2_scheduler.closeable import Closeable


@dataclass(frozen=True)
class SimulatorStats:
    """A simulator's counts, and the calls it handles at once (now, and the peak since reset)."""

    calls_per_avatar: dict[int, int]
    calls_per_key: dict[str, int]
    total: int
    in_flight: int = 0
    peak_in_flight: int = 0
    rejected: int = 0  # answered RESOURCE_EXHAUSTED: the capacity was full


class SimulatorControl(Closeable):
    """A client of a simulator's Control service (tests, demo, chaos)."""

    def __init__(self, target: str, timeout_s: float = 5.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = simulator_pb2_grpc.ControlStub(self._channel)
        self._timeout_s = timeout_s

    def stats(self) -> SimulatorStats:
        """The counts since start or the last reset; raise ``grpc.RpcError`` if unreachable."""
        reply = self._stub.Stats(simulator_pb2.StatsRequest(), timeout=self._timeout_s)
        return SimulatorStats(
            dict(reply.calls_per_avatar),
            dict(reply.calls_per_key),
            reply.total,
            in_flight=reply.in_flight,
            peak_in_flight=reply.peak_in_flight,
            rejected=reply.rejected,
        )

    def configure(
        self,
        *,
        latency_ms: int | None = None,
        fail_rate: float | None = None,
        fail_avatars: Iterable[int] | None = None,
        hang_avatars: Iterable[int] | None = None,
        hang: bool | None = None,
        capacity: int | None = None,
    ) -> None:
        """Change the behaviour; arguments left None are kept (``capacity`` 0: unlimited).

        Raises ``grpc.RpcError``.
        """
        request = simulator_pb2.ConfigureRequest(
            latency_ms=latency_ms, fail_rate=fail_rate, hang=hang, capacity=capacity
        )
        if fail_avatars is not None:
            request.set_fail_avatars = True
            request.fail_avatars.extend(fail_avatars)
        if hang_avatars is not None:
            request.set_hang_avatars = True
            request.hang_avatars.extend(hang_avatars)
        self._stub.Configure(request, timeout=self._timeout_s)

    def reset(self) -> None:
        """Forget counts and remembered answers. Raises ``grpc.RpcError``."""
        self._stub.Reset(simulator_pb2.ResetRequest(), timeout=self._timeout_s)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
