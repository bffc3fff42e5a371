"""The rq side of the bench: the no-op job function the rq workers import by name (`bench.peers.rq_app.noop`)."""

from __future__ import annotations

import time


def noop() -> float:
    """Does nothing; its result is the wall-clock time it started (for dispatch latency)."""
    return time.time()
