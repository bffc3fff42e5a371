"""Jittered exponential backoff for reconnects. Pure: no clock, no sleeping, randomness injected."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("Backoff", "jittered_delay_s")


def jittered_delay_s(failures: int, *, base_s: float, max_s: float, rand: Callable[[], float]) -> float:
    """The delay before the next try after `failures` consecutive failures (1 = the first one).

    "Equal jitter": half of the capped exponential step is fixed, half is random. The fixed half keeps
    a fleet of workers from hammering a restarting API with near-zero delays (what full jitter allows),
    the random half spreads them out.

    Args:
        failures: consecutive failures so far, at least 1.
        base_s: the step after the first failure.
        max_s: the cap on the step.
        rand: a source of floats in [0, 1).

    Returns:
        A delay in seconds in `[step / 2, step)` with `step = min(max_s, base_s * 2 ** (failures - 1))`.
    """
    exponent = min(max(failures, 1) - 1, 62)  # bound the power so huge counts cannot overflow a float
    step = min(max_s, base_s * (2.0**exponent))
    return step / 2 + (step / 2) * rand()


class Backoff:
    """Counts consecutive failures and hands out the next delay; `reset()` after a success."""

    def __init__(self, *, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> None:
        self._base_s = base_s
        self._max_s = max_s
        self._rand = rand
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last reset."""
        return self._failures

    def next_delay_s(self) -> float:
        """Record one more failure and return how long to wait before the next try."""
        self._failures += 1
        return jittered_delay_s(self._failures, base_s=self._base_s, max_s=self._max_s, rand=self._rand)

    def reset(self) -> None:
        """Forget past failures (call after a successful connect)."""
        self._failures = 0
