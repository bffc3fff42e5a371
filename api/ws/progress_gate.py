"""Coalescing of an agent's progress flood: per task attempt, a token bucket of `rate_per_s` frames a second
(holding at most one second's worth, and full when the attempt starts) decides which progress frames reach the
scheduler at once. A stream at or below the rate (jitter included) passes untouched, so the gate adds nothing
when idle; only past the rate (once the first second's worth is spent) are frames held, and of those only the
latest is kept and applied when a token comes back (or just before the attempt's result), so the last progress
state is never lost. Pure, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.messages import TaskProgress

__all__ = ("ProgressGate",)

_Key = tuple[str, int]


class ProgressGate:
    """Per attempt: the bucket's tokens as of when it was last updated, and the held-back latest frame."""

    def __init__(self, rate_per_s: float, *, max_tracked: int = 10_000) -> None:
        # A rate of 0 (or less) turns coalescing off: every frame is admitted.
        self._rate = rate_per_s if rate_per_s > 0 else 0.0
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        """Time for one token to come back: how soon a held frame may become due."""
        # A new attempt starts with a full bucket, one second's worth, and refills to it while quiet. The slack
        # is what absorbs the jitter of a stream running at the rate: it spends a token as one comes back, so
        # starting with one token left it none, and every frame a little early (after a late one) was held
        # for a window, ~1/rate of added latency (docs/benchmarks.md, slice `stream` of 2026-11-29).
        self._burst = max(1.0, self._rate)
        self._max_tracked = max_tracked
        self._buckets: OrderedDict[_Key, tuple[float, float]] = OrderedDict()
        self._held: dict[_Key, TaskProgress] = {}

    @property
    def holding(self) -> bool:
        """True while some frame waits for its window."""
        return bool(self._held)

    def admit(self, progress: TaskProgress, now: float) -> bool:
        """True: apply it now. False: it is held (replacing any older held frame of the attempt)."""
        if self._rate == 0.0:
            return True
        key = (progress.task_id, progress.attempt)
        if key not in self._held and self._spend(key, now):
            return True
        self._held[key] = progress
        return False

    def due(self, now: float) -> list[TaskProgress]:
        """Held frames whose token came back; they count as applied now."""
        ready = [key for key in self._held if self._spend(key, now)]
        return [self._held.pop(key) for key in ready]

    def take(self, task_id: str, attempt: int) -> TaskProgress | None:
        """The attempt's held frame (to apply before its result), and forget the attempt."""
        key = (task_id, attempt)
        self._buckets.pop(key, None)
        return self._held.pop(key, None)

    def _spend(self, key: _Key, now: float) -> bool:
        """Take one token from the attempt's bucket if it has one (refilled for the time since its last use)."""
        state = self._buckets.get(key)
        if state is None:
            tokens = self._burst
        else:
            tokens, at = state
            tokens = min(self._burst, tokens + max(0.0, now - at) * self._rate)
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_tracked:
            old, _ = self._buckets.popitem(last=False)
            self._held.pop(old, None)
        return ok
