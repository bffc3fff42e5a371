"""The worker process collects the young generation less often, as the API does."""

from __future__ import annotations

import gc

from worker import runtime


def test_the_worker_collects_its_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        runtime.tune_gc()
        assert gc.get_threshold() == (runtime.GC_YOUNG_THRESHOLD, before[1], before[2])
        assert before[0] < runtime.GC_YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*before)
