"""The worker's process runner collects the young generation less often, as the API does."""

from __future__ import annotations

import gc

from worker import runtime


async def _threshold() -> tuple[int, int, int]:
    return gc.get_threshold()


def test_the_worker_loop_runs_with_the_raised_young_generation_threshold() -> None:
    before = gc.get_threshold()
    try:
        assert runtime.run(_threshold()) == (runtime.GC_YOUNG_THRESHOLD, before[1], before[2])
        assert before[0] < runtime.GC_YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*before)
