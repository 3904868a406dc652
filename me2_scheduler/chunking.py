"""Cutting a stream into bounded lists, so that no round trip carries a million items."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

_T = TypeVar("_T")


def chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """Consecutive lists of at most ``size`` items of ``items``, read lazily.

    Raises ``ValueError`` for size < 1.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
