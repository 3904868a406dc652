"""A claim on one dispatch slot, and its text form in the ready list (DESIGN §3.1).

``claim_due.lua`` writes a ready entry as ``"<avatar_id>:<planned>:<token>"``:
planned is whole epoch seconds for an auto slot and ``"<seconds>.<ms>"`` for a
manual trigger (``claim_one.lua``). This module reads and writes that form.
"""

from __future__ import annotations

from dataclasses import dataclass

from me2_scheduler.clock import from_epoch
from me2_scheduler.policy import idempotency_key


def parse_planned(text: str) -> int | float:
    """A planned time from a script: ``"1700000000"`` (an int) or ``"1700000000.123"``.

    Raises ``ValueError`` for anything else.
    """
    return int(text) if text.isdigit() else float(text)


@dataclass(frozen=True)
class Claim:
    """One dispatch slot of one avatar, held under a lease until acked."""

    avatar_id: int
    # epoch seconds: the due time that was claimed, whole for an auto slot; for a
    # trigger Redis TIME with milliseconds, never whole (see claim_one.lua)
    planned_at: int | float
    token: str

    @property
    def idempotency_key(self) -> str:
        """``policy.idempotency_key`` of this slot: the same for every re-dispatch of it."""
        return idempotency_key(self.avatar_id, from_epoch(self.planned_at))

    @property
    def entry(self) -> str:
        """The ready-list entry of this claim, as ``claim_due.lua`` writes it."""
        planned = self.planned_at
        text = str(planned) if isinstance(planned, int) else f"{planned:.3f}"
        return f"{self.avatar_id}:{text}:{self.token}"

    @classmethod
    def parse(cls, entry: str) -> Claim:
        """Read a ready-list entry ``"<avatar_id>:<planned>:<token>"``; raise ``ValueError``."""
        avatar_id, planned_at, token = entry.split(":", 2)
        return cls(int(avatar_id), parse_planned(planned_at), token)

    @classmethod
    def held(cls, avatar_id: int, lease: str) -> Claim:
        """The claim ``claim_one.lua`` returns as ``"<planned>:<token>"``; raise ``ValueError``."""
        planned_at, token = lease.split(":", 1)
        return cls(int(avatar_id), parse_planned(planned_at), token)
