"""The celery side of the bench: Redis broker, Redis result backend, one no-op task; celery's defaults.

Runs in the peers' venv. celery's CLI imports an app built at import time, so this module reads
BENCH_REDIS_URL on import (a bench-only exception to our no-globals rule).
"""

from __future__ import annotations

import os
import time

from celery import Celery

REDIS_URL = os.environ["BENCH_REDIS_URL"]

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.task_default_queue = "bench-celery"
# Quieter logs only; every setting that touches the work stays at celery's default.
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.noop")
def noop() -> float:
    """Does nothing; its result is the wall-clock time it started (for dispatch latency)."""
    return time.time()
