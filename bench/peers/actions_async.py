"""The bench's actions for an asyncio peer client (taskiq); same raw samples as `actions_sync`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

POLL_WINDOW = 200
RESULT_POLL_S = 0.001


async def batch(adapter: Any, n: int, chunk: int, timeout_s: float) -> dict[str, Any]:
    """Submit n in concurrent chunks, then wait until every result is stored."""
    started = time.perf_counter()
    handles = []
    for offset in range(0, n, chunk):
        handles.extend(await asyncio.gather(*(adapter.submit() for _ in range(min(chunk, n - offset)))))
    submitted = time.perf_counter()
    await adapter.wait_all(handles, timeout_s)
    return {"n": n, "started": started, "submitted": submitted, "finished": time.perf_counter()}


async def submits(adapter: Any, n: int, clients: int, timeout_s: float) -> dict[str, Any]:
    """`clients` coroutines submitting n tasks in all, each one at a time; then every result is waited for."""
    answers: list[list[float]] = []
    handles: list[Any] = []
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]

    async def client(count: int) -> None:
        for _ in range(count):
            t0 = time.perf_counter()
            handles.append(await adapter.submit())
            answers.append([t0, time.perf_counter()])

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client(count) for count in shares)), timeout_s)
    submitted = time.perf_counter()
    await adapter.wait_all(handles, timeout_s)
    return {"started": started, "submitted": submitted, "drained": time.perf_counter(), "answers": answers}


async def open_loop(adapter: Any, rate: float, duration_s: float, drain_s: float) -> dict[str, Any]:
    """Submit at a fixed rate whatever happens; one poller finds the stored results.

    One shared poller (up to POLL_WINDOW oldest pending results per round, every RESULT_POLL_S)
    rather than a `wait_result` loop per task: with a few hundred pending, per-task loops would make
    the client, not taskiq, the bottleneck.
    """
    samples: list[list[float | None]] = []
    pending: dict[int, tuple[Any, list[float | None]]] = {}
    started = time.perf_counter()
    stop_at = started + duration_s + drain_s
    submitting = True

    async def poll() -> None:
        while (submitting or pending) and time.perf_counter() < stop_at:
            window = list(pending.items())[:POLL_WINDOW]
            ready = await asyncio.gather(*(handle.is_ready() for _, (handle, _) in window))
            now = time.perf_counter()
            for (key, (_, sample)), ok in zip(window, ready, strict=True):
                if ok:
                    sample[3] = now
                    del pending[key]
            await asyncio.sleep(RESULT_POLL_S)

    async def one(index: int, scheduled: float) -> None:
        sample: list[float | None] = [scheduled, time.perf_counter(), None, None]
        samples.append(sample)
        handle = await adapter.submit()
        sample[2] = time.perf_counter()
        pending[index] = (handle, sample)

    poller = asyncio.create_task(poll())
    submits = set()
    for i in range(int(rate * duration_s)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, started + i / rate))
        submits.add(task)
        task.add_done_callback(submits.discard)
    if submits:
        await asyncio.wait(submits, timeout=max(0.0, stop_at - time.perf_counter()) + 5)
    submitting = False
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(poller, timeout=max(0.0, stop_at - time.perf_counter()) + 5)
    return {"started": started, "samples": samples}


async def idle(adapter: Any, n: int, timeout_s: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"e2e": [], "dispatch": [], "submit_to_receive": []}
    for _ in range(n):
        started = time.perf_counter()
        called_at = time.time()
        handle = await adapter.submit()
        answered_at = time.time()
        worker_started_at = await adapter.wait(handle, timeout_s)
        out["e2e"].append(time.perf_counter() - started)
        out["dispatch"].append(worker_started_at - answered_at)
        out["submit_to_receive"].append(worker_started_at - called_at)
    return out
