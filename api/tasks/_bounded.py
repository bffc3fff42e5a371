"""The one way this package keeps an in-memory map bounded: the least recently written entry goes first."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections import OrderedDict

__all__ = ("remember",)

_K = TypeVar("_K")
_V = TypeVar("_V")


def remember(entries: OrderedDict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Set `key` as the newest entry; past `limit` entries, forget the oldest."""
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > limit:
        entries.popitem(last=False)
