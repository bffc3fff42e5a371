"""The scheduler's and the worker's process runners collect the young generation less often, as the API does."""

from __future__ import annotations

import gc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from scheduler import runtime as scheduler_runtime
from worker import runtime as worker_runtime


async def _threshold() -> tuple[int, int, int]:
    return gc.get_threshold()


@pytest.mark.parametrize("runtime", [scheduler_runtime, worker_runtime], ids=["scheduler", "worker"])
def test_a_process_loop_runs_with_the_raised_young_generation_threshold(runtime: Any) -> None:
    run: Callable[[Coroutine[Any, Any, tuple[int, int, int]]], tuple[int, int, int]] = runtime.run
    before = gc.get_threshold()
    try:
        assert run(_threshold()) == (runtime.GC_YOUNG_THRESHOLD, before[1], before[2])
        assert before[0] < runtime.GC_YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*before)
