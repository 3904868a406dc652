"""The console's avatar actions: the gRPC API's own handlers, called in this process.

Pause, Resume, Trigger, Disable and Enable go through ``SchedulerServicer``,
the object the rpc_server serves: the policy table decides, MySQL is written
first and Redis mirrors it, a trigger dispatches through the ``Dispatcher``
with the Action call's deadline bounded by the server's ``Timeout``. Each
call writes the rpc_server's access-log line, with the operator's name
added, and counts in the same RPC metrics:

    rpc ResumeAvatarSchedule avatar_id=42 code=0 3.1ms operator=alice via=console

Calling the handlers here, rather than dialling ``ListenOn``, keeps the
console working with ``Auth``, TLS and mTLS on the gRPC port and needs no
gRPC credentials for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from me2_scheduler import metrics
from me2_scheduler.protos import scheduler_pb2
from me2_scheduler.rpc_server.servicer import SchedulerServicer

METHODS = {
    "pause": "PauseAvatarSchedule",
    "resume": "ResumeAvatarSchedule",
    "trigger": "TriggerSchedule",
    "disable": "DisableAvatarSchedule",
    "enable": "EnableAvatarSchedule",
}
NO_DEADLINE_S = 3600.0  # Timeout 0 means none; a browser still gets an answer within this

log = logging.getLogger("me2_scheduler.rpc")  # the rpc_server's access log


@dataclass(frozen=True)
class Done:
    """An API answer: its code and message, and the action a trigger made."""

    code: int
    message: str
    action_type: str = ""
    action_id: int = 0

    @property
    def ok(self) -> bool:
        return self.code == 0


class CallContext:
    """What a handler reads of its ``grpc.ServicerContext``: the deadline, and call end.

    The console's caller is a browser waiting on a page, so the budget is the
    server's ``Timeout`` (as for any gRPC call) and the call never ends early.
    """

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = clock() + budget_s

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - self._clock())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """The call is never cut while the handler runs: nothing to call back."""
        return True


class Actions:
    """Runs avatar actions through ``servicer`` on behalf of named operators."""

    def __init__(self, servicer: SchedulerServicer, timeout_ms: int) -> None:
        self._servicer = servicer
        self._budget_s = timeout_ms / 1000 if timeout_ms > 0 else NO_DEADLINE_S

    def run(self, action: str, avatar_id: int, operator: str) -> Done:
        """Call the API method of ``action`` (a key of ``METHODS``) for ``operator``.

        Raises KeyError for an unknown action; every other problem is a code.
        """
        method = METHODS[action]
        request = getattr(scheduler_pb2, f"{method}Request")(avatar_id=avatar_id)
        began = time.perf_counter()
        response: Any = getattr(self._servicer, method)(request, CallContext(self._budget_s))
        elapsed = time.perf_counter() - began
        code = int(response.code)
        metrics.RPC_REQUESTS.labels(method=method, code=str(code)).inc()
        metrics.RPC_DURATION.labels(method=method).observe(elapsed)
        level = logging.ERROR if code >= 500 else logging.INFO
        message = "rpc %s avatar_id=%d code=%d %.1fms operator=%s via=console"
        log.log(level, message, method, avatar_id, code, elapsed * 1000, operator)
        return Done(
            code,
            response.message,
            getattr(response, "action_type", ""),
            getattr(response, "action_id", 0),
        )
