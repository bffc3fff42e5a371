"""Coalescing of an agent's progress flood: per task attempt, at most `rate_per_s` progress frames a second
reach the scheduler; of the frames in between only the latest is kept and applied when the window opens
(or just before the attempt's result), so the last progress state is never lost. Pure, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.messages import TaskProgress

__all__ = ("ProgressGate",)

_Key = tuple[str, int]


class ProgressGate:
    """Remembers when each attempt last had progress applied, and the held-back latest frame."""

    def __init__(self, rate_per_s: float, *, max_tracked: int = 10_000) -> None:
        # A rate of 0 (or less) turns coalescing off: every frame is admitted.
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._max_tracked = max_tracked
        self._last: OrderedDict[_Key, float] = OrderedDict()
        self._held: dict[_Key, TaskProgress] = {}

    @property
    def holding(self) -> bool:
        """True while some frame waits for its window."""
        return bool(self._held)

    def admit(self, progress: TaskProgress, now: float) -> bool:
        """True: apply it now. False: it is held (replacing any older held frame of the attempt)."""
        key = (progress.task_id, progress.attempt)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = progress
            return False
        self._mark(key, now)
        self._held.pop(key, None)
        return True

    def due(self, now: float) -> list[TaskProgress]:
        """Held frames whose window has opened; they count as applied now."""
        ready = [key for key in self._held if now - self._last.get(key, 0.0) >= self.interval_s]
        out: list[TaskProgress] = []
        for key in ready:
            out.append(self._held.pop(key))
            self._mark(key, now)
        return out

    def take(self, task_id: str, attempt: int) -> TaskProgress | None:
        """The attempt's held frame (to apply before its result), and forget the attempt."""
        key = (task_id, attempt)
        self._last.pop(key, None)
        return self._held.pop(key, None)

    def _mark(self, key: _Key, now: float) -> None:
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self._max_tracked:
            old, _ = self._last.popitem(last=False)
            self._held.pop(old, None)
