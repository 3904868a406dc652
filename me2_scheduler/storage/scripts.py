"""The index's Lua scripts and its error boundary.

Each operation on the index is one ``.lua`` file in ``storage/lua`` whose
header gives its KEYS and ARGV; the sources are read once per process and
registered once per client. redis-py errors become ``RedisIndexError`` here,
at the boundary, so callers handle one error type.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from importlib import resources
from typing import ParamSpec, TypeVar

from redis.exceptions import RedisClusterException, RedisError

from me2_scheduler.errors import RedisIndexError

_P = ParamSpec("_P")
_R = TypeVar("_R")


@functools.cache
def script_sources() -> dict[str, str]:
    """The Lua sources shipped in ``storage/lua``, by file stem (read once per process)."""
    folder = resources.files("me2_scheduler.storage").joinpath("lua")
    return {
        entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


@contextlib.contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn redis-py errors raised inside into ``RedisIndexError("redis <action>: ...")``."""
    try:
        yield
    except (RedisError, RedisClusterException) as exc:
        raise RedisIndexError(f"redis {action}: {exc}") from None


def translated(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate an index method so that redis-py errors leave it as ``RedisIndexError``."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with redis_errors(func.__name__):
            return func(*args, **kwargs)

    return wrapper
