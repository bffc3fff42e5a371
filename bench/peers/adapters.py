"""Each peer's client calls for the bench's actions: submit one no-op, wait for a result. Peers' venv only.

A sync adapter (dramatiq, celery, rq) is used from threads; the async one (taskiq) from one event loop.
`wait` returns the wall-clock time the worker started the task (the no-op's return value).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

BATCH_POLL_S = 0.005
RESULT_POLL_S = 0.001
CHECK_WINDOW = 100


class DramatiqAdapter:
    def __init__(self) -> None:
        from bench.peers import dramatiq_app

        self._app = dramatiq_app

    def submit(self) -> Any:
        return self._app.noop.send()

    def wait(self, handle: Any, timeout_s: float) -> float:
        return float(self._app.backend.get_result(handle, block=True, timeout=int(timeout_s * 1000)))

    def close(self) -> None:
        self._app.broker.close()


class CeleryAdapter:
    def __init__(self) -> None:
        from bench.peers import celery_app

        self._app = celery_app

    def submit(self) -> Any:
        return self._app.noop.delay()

    def wait(self, handle: Any, timeout_s: float) -> float:
        # Results are bound to the calling thread's backend (celery keeps one per thread).
        return float(self._app.app.AsyncResult(handle.id).get(timeout=timeout_s))

    def close(self) -> None:
        self._app.app.close()


class RqAdapter:
    def __init__(self) -> None:
        from redis import Redis
        from rq import Queue

        self._redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
        self._queue = Queue("bench-rq", connection=self._redis)

    def submit(self) -> Any:
        return self._queue.enqueue("bench.peers.rq_app.noop")

    def wait(self, handle: Any, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Blocks on the job's result stream (XREAD) for up to a second at a time.
            result = handle.latest_result(timeout=1)
            if result is not None:
                if result.type != result.Type.SUCCESSFUL:
                    raise RuntimeError(f"rq job {handle.id} ended {result.type}")
                return float(result.return_value)
        raise TimeoutError(f"rq job {handle.id}: no result after {timeout_s:.0f}s")

    def close(self) -> None:
        self._redis.close()


class TaskiqAdapter:
    """taskiq has no blocking result wait: `wait` polls every RESULT_POLL_S (its own wait_result)."""

    def __init__(self) -> None:
        from bench.peers import taskiq_app

        self._app = taskiq_app

    async def start(self) -> None:
        await self._app.broker.startup()

    async def submit(self) -> Any:
        return await self._app.noop.kiq()

    async def wait(self, handle: Any, timeout_s: float) -> float:
        result = await handle.wait_result(check_interval=RESULT_POLL_S, timeout=timeout_s)
        if result.is_err:
            raise RuntimeError(f"taskiq no-op failed: {result.error!r}")
        return float(result.return_value)

    async def wait_all(self, handles: list[Any], timeout_s: float) -> None:
        """Every result stored: `is_ready` checks, CHECK_WINDOW at once, until none is missing."""
        deadline = time.monotonic() + timeout_s
        pending = list(handles)
        while pending:
            window, rest = pending[:CHECK_WINDOW], pending[CHECK_WINDOW:]
            ready = await asyncio.gather(*(handle.is_ready() for handle in window))
            pending = [handle for handle, ok in zip(window, ready, strict=True) if not ok] + rest
            if pending and not any(ready):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} taskiq results missing after {timeout_s:.0f}s")
                await asyncio.sleep(BATCH_POLL_S)

    async def close(self) -> None:
        await self._app.broker.shutdown()


SYNC = {"dramatiq": DramatiqAdapter, "celery": CeleryAdapter, "rq": RqAdapter}
ASYNC = {"taskiq": TaskiqAdapter}
VERSIONS = {
    "dramatiq": ("dramatiq", "redis"),
    "celery": ("celery", "kombu", "redis"),
    "rq": ("rq", "redis"),
    "taskiq": ("taskiq", "taskiq-redis", "redis"),
}
