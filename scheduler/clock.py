"""The one clock scheduler code reads: scripts get `now_ms` from it, not from Redis TIME.

The one exception: the dispatch the dispatch loop sends behind its wait for a wake runs up to a second after it
was built, so with the system clock it reads the server's time (see `Dispatcher.queue_wake`)."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ("Clock", "FakeClock", "SystemClock")


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock time in ms since the epoch (shared across nodes, unlike a monotonic clock)."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: float) -> None:
        self._now += int(ms)
