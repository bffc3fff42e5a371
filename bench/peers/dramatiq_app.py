"""The dramatiq side of the bench: a Redis broker, the Redis results backend and one no-op actor.

Runs in the peers' venv. dramatiq's CLI imports a module that declares its broker at import time,
so this module reads BENCH_REDIS_URL on import (a bench-only exception to our no-globals rule).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

REDIS_URL = os.environ["BENCH_REDIS_URL"]

backend = RedisBackend(url=REDIS_URL, namespace="bench-dramatiq-results")
broker = RedisBroker(url=REDIS_URL, namespace="bench-dramatiq")
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0, queue_name="bench")
def noop() -> float:
    """Does nothing; its result is the wall-clock time it started (for dispatch latency)."""
    return time.time()
