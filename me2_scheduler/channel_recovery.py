"""Getting a client channel out of trouble, and saying so in ``/healthz``.

gRPC keeps sending calls over a connection it believes READY, whatever those
calls do. When a middlebox (NAT, conntrack, a load balancer) forgets a
connection without closing it, every call on it runs into its deadline while
a new connection would work at once, and only a keepalive ping notices, which
go-zero servers allow at most every 5 minutes (``clients.channels.CHANNEL_OPTIONS``).
So after ``RESET_AFTER_DEADLINES`` DEADLINE_EXCEEDED in a row on one channel,
with no answer in between, the channel is replaced by a new one. The new one
opens new TCP connections (the channels use a local subchannel pool, so a new
channel never shares the old one's connections), so a silent peer is left
within N × Timeout. A service that is merely slow costs one reconnect per N
timed-out calls, which is cheap.

While a client is in trouble its dependency is reported ``degraded`` (see
``health``): from a call that failed the way go-zero's breaker counts a
failure (deadline, unavailable, ...) or that the breaker dropped, until the
next call the service answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from me2_scheduler import health
from me2_scheduler.health import State

RESET_AFTER_DEADLINES = 3

log = logging.getLogger("me2_scheduler.clients")


class ChannelRecovery:
    """Deadlines in a row per channel, the reset at ``reset_after``, and the health report.

    ``service`` names the service in log lines (``Action``), ``dependency`` in
    ``/healthz`` (``action``); ``on_reset`` is called after each reset (a
    metric). Thread-safe; one per client per process.
    """

    def __init__(
        self,
        service: str,
        dependency: str,
        *,
        reset_after: int = RESET_AFTER_DEADLINES,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        if reset_after < 1:
            raise ValueError(f"reset_after must be >= 1, not {reset_after}")
        self.service = service
        self.dependency = dependency
        self.reset_after = reset_after
        self._on_reset = on_reset
        self._source = f"{service} client {id(self):x}"
        self._lock = threading.Lock()
        self._per_channel: dict[object, int] = {}  # channel → its deadlines in a row
        self._in_a_row = 0  # deadlines in a row over every channel of the client
        self._resets = 0  # channel resets since the last answer
        self._failure = ""  # the last other failure since the last answer
        self._reported = State.OK

    def answered(self, channel: object) -> None:
        """The service answered a call on ``channel`` (a response, or an error of its own)."""
        with self._lock:
            self._per_channel.pop(channel, None)
            if self._reported is State.OK and not self._per_channel:
                return  # the common case: nothing to clear, nothing to write
            self._in_a_row, self._resets, self._failure = 0, 0, ""
            self._publish()

    def missed_deadline(self, channel: object, where: str, reset: Callable[[], bool]) -> None:
        """A call on ``channel`` (to ``where``) ran into its deadline; ``reset`` replaces it.

        ``reset`` returns False when the channel was replaced or closed meanwhile.
        """
        with self._lock:
            count = self._per_channel.get(channel, 0) + 1
            self._in_a_row += 1
            due = count >= self.reset_after
            if due:
                self._per_channel.pop(channel, None)
            else:
                self._per_channel[channel] = count
            in_a_row = self._in_a_row
        if due and reset():
            log.error(
                "%s: %d deadlines in a row on %s; closing the channel and connecting again",
                self.service,
                in_a_row,
                where,
            )
            if self._on_reset is not None:
                self._on_reset()
            with self._lock:
                self._resets += 1
        with self._lock:
            self._publish()

    def failed(self, reason: str) -> None:
        """A call failed otherwise (unavailable, dropped by the breaker, no endpoint)."""
        with self._lock:
            self._failure = reason
            self._publish()

    def withdraw(self) -> None:
        """The client is closed: what it reported no longer holds."""
        with self._lock:
            self._per_channel.clear()
            self._in_a_row, self._resets, self._failure = 0, 0, ""
            self._publish()

    def reason(self) -> str:
        """Why the client is in trouble now, "" when it is not."""
        with self._lock:
            return self._reason()

    def _reason(self) -> str:
        parts = []
        if self._in_a_row:
            parts.append(f"{self._in_a_row} deadline{'s' if self._in_a_row > 1 else ''} in a row")
        if self._resets:
            parts.append("channel reset" + (f" {self._resets} times" if self._resets > 1 else ""))
        if self._failure:
            parts.append(self._failure)
        return ", ".join(parts)

    def _publish(self) -> None:
        """Report the state to this process's health board (called under the lock)."""
        reason = self._reason()
        self._reported = State.DEGRADED if reason else State.OK
        health.report(self.dependency, self._source, self._reported, reason)
