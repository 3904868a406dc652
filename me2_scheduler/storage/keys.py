"""Every Redis key name of the delay index, built in one place (DESIGN §2.2).

All keys share the hash tag ``{<Redis.Key>}`` so they live in one Redis
Cluster slot and a Lua script may touch any of them. Scripts never build key
names: they get them in ``KEYS`` from here.

| key                      | type | holds                                                 |
|--------------------------|------|-------------------------------------------------------|
| ``{P}:due``              | ZSET | avatar_id → due epoch seconds (active, not in flight) |
| ``{P}:inflight``         | ZSET | avatar_id → lease expiry epoch seconds                |
| ``{P}:leases``           | HASH | avatar_id → ``"<token>:<planned epoch s>"``           |
| ``{P}:ready``            | LIST | ``"<avatar_id>:<planned>:<token>"`` for the workers   |
| ``{P}:meta``             | HASH | version, built_at, rows — absent means "rebuild"      |
| ``{P}:due:rebuild:<run>``| ZSET | one rebuild's due set while it is streamed            |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

from me2_scheduler.config import RedisConf
from me2_scheduler.errors import ConfigError


class _Key:
    """The name ``{P}:<suffix>`` of one key of the ``Keys`` it is read from."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    @overload
    def __get__(self, keys: None, owner: type) -> _Key: ...
    @overload
    def __get__(self, keys: Keys, owner: type) -> str: ...
    def __get__(self, keys: Keys | None, owner: type) -> _Key | str:
        return self if keys is None else f"{keys.prefix}:{self.suffix}"


@dataclass(frozen=True)
class Keys:
    """The key names for one ``Redis.Key``; raise ``ConfigError`` for an unusable key."""

    key: str = "me2:scheduler"

    # The keys of the module's table.
    due = _Key("due")
    inflight = _Key("inflight")
    leases = _Key("leases")
    ready = _Key("ready")
    meta = _Key("meta")

    def __post_init__(self) -> None:
        # An empty tag or a brace inside it would make Redis hash the keys
        # apart, and the scripts would fail on a cluster with CROSSSLOT.
        if not self.key or "{" in self.key or "}" in self.key:
            raise ConfigError("Redis.Key", f"must be non-empty and without braces: {self.key!r}")

    @classmethod
    def from_conf(cls, conf: RedisConf) -> Keys:
        """The keys for ``conf.key``; raise ``ConfigError`` for an unusable key."""
        return cls(conf.key)

    @property
    def prefix(self) -> str:
        return "{" + self.key + "}"

    @property
    def due_rebuild(self) -> str:
        """The common stem of the rebuild keys (see ``rebuild_run``)."""
        return f"{self.prefix}:due:rebuild"

    def rebuild_run(self, run_id: str) -> str:
        """The temporary due set of one rebuild.

        One key per run, so two supervisors rebuilding at once never mix their
        halves; each swaps in a whole set.
        """
        return f"{self.due_rebuild}:{run_id}"

    def all(self) -> tuple[str, ...]:
        """Every key name (with a sample rebuild key), for the one-slot check."""
        return (
            self.due,
            self.inflight,
            self.leases,
            self.ready,
            self.meta,
            self.due_rebuild,
            self.rebuild_run("sample"),
        )
