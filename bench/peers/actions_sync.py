"""The bench's actions for a sync peer client (dramatiq, celery, rq), threads where clients are concurrent.

Every action returns raw samples (perf_counter seconds, or wall-clock where the worker's clock is
involved); the driver turns them into figures the same way for every system.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

OPEN_LOOP_WAITERS = 32


def batch(adapter: Any, n: int, timeout_s: float) -> dict[str, Any]:
    """Submit n one by one (none of these peers has a batch enqueue), then wait for every result."""
    started = time.perf_counter()
    handles = [adapter.submit() for _ in range(n)]
    submitted = time.perf_counter()
    for handle in handles:
        adapter.wait(handle, timeout_s)
    return {"n": n, "started": started, "submitted": submitted, "finished": time.perf_counter()}


def submits(adapter: Any, n: int, clients: int, timeout_s: float) -> dict[str, Any]:
    """`clients` threads submitting n tasks in all, each one at a time; then every result is waited for."""
    answers: list[list[float]] = []
    handles: list[Any] = []
    lock = threading.Lock()
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]

    def client(count: int) -> None:
        mine, mine_handles = [], []
        for _ in range(count):
            t0 = time.perf_counter()
            mine_handles.append(adapter.submit())
            mine.append([t0, time.perf_counter()])
        with lock:
            answers.extend(mine)
            handles.extend(mine_handles)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(count,)) for count in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    submitted = time.perf_counter()
    for handle in handles:
        adapter.wait(handle, timeout_s)
    return {"started": started, "submitted": submitted, "drained": time.perf_counter(), "answers": answers}


def open_loop(adapter: Any, rate: float, duration_s: float, drain_s: float) -> dict[str, Any]:
    """Submit at a fixed rate whatever happens; waiter threads record when each result arrives.

    A sample is [scheduled, submit called, answered, result or None]; a submit late on its schedule
    (the client could not keep the rate) shows as called > scheduled.
    """
    samples: list[list[float | None]] = []
    jobs: queue.Queue[tuple[int, Any] | None] = queue.Queue()
    stop_at = [time.perf_counter() + duration_s + drain_s]

    def waiter() -> None:
        while (item := jobs.get()) is not None:
            index, handle = item
            remaining = stop_at[0] - time.perf_counter()
            if remaining <= 0:
                continue
            try:
                adapter.wait(handle, remaining)
                samples[index][3] = time.perf_counter()
            except Exception:
                continue

    waiters = [threading.Thread(target=waiter, daemon=True) for _ in range(OPEN_LOOP_WAITERS)]
    for thread in waiters:
        thread.start()
    started = time.perf_counter()
    stop_at[0] = started + duration_s + drain_s
    total = int(rate * duration_s)
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        called = time.perf_counter()
        handle = adapter.submit()
        samples.append([scheduled, called, time.perf_counter(), None])
        jobs.put((i, handle))
    for _ in waiters:
        jobs.put(None)
    for thread in waiters:
        thread.join(max(0.0, stop_at[0] - time.perf_counter()) + 5)
    return {"started": started, "samples": samples}


def idle(adapter: Any, n: int, timeout_s: float) -> dict[str, list[float]]:
    """One task at a time on an idle system: submit -> result, and when the worker started it."""
    out: dict[str, list[float]] = {"e2e": [], "dispatch": [], "submit_to_receive": []}
    for _ in range(n):
        started = time.perf_counter()
        called_at = time.time()
        handle = adapter.submit()
        answered_at = time.time()
        worker_started_at = adapter.wait(handle, timeout_s)
        out["e2e"].append(time.perf_counter() - started)
        out["dispatch"].append(worker_started_at - answered_at)
        out["submit_to_receive"].append(worker_started_at - called_at)
    return out
