"""What every object holding a connection shares: ``close``, and ``with`` calling it."""

from __future__ import annotations

from typing import TypeVar

_Self = TypeVar("_Self", bound="Closeable")


class Closeable:
    """An object that holds a connection (a channel, a client) until ``close``.

    ``with`` closes it on the way out, whatever ends the block.
    """

    def close(self) -> None:
        """Release what the object holds; a subclass says what that is."""
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
