"""The taskiq side of the bench: taskiq-redis ListQueueBroker, Redis result backend, one no-op task.

Runs in the peers' venv. taskiq's CLI imports `module:broker`, so the broker is built on import from
BENCH_REDIS_URL (a bench-only exception to our no-globals rule).
"""

from __future__ import annotations

import os
import time

from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

REDIS_URL = os.environ["BENCH_REDIS_URL"]

broker = ListQueueBroker(url=REDIS_URL, queue_name="bench-taskiq").with_result_backend(
    RedisAsyncResultBackend(redis_url=REDIS_URL, result_ex_time=3600, prefix_str="bench-taskiq-results"),
)


@broker.task(task_name="bench.noop")
async def noop() -> float:
    """Does nothing; its result is the wall-clock time it started (for dispatch latency)."""
    return time.time()
