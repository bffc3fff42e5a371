"""Run the no-op workload on taskiq (taskiq-redis, 2 worker processes) and print one JSON line.

Run with the peers' venv: `bench/.venv-peers/bin/python -m bench.peers.taskiq_run --redis-url ...`.
taskiq has no blocking result wait: the client polls `is_ready` (1 ms in the sequential run).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.peers.common import REPO_ROOT, PeerArgs, emit, parse_args, versions
from bench.procs import Proc
from bench.stats import latency_fields, median_run, throughput

WORKERS = 2
BATCH_POLL_S = 0.005
SEQUENTIAL_POLL_S = 0.001
CHECK_WINDOW = 100


def start_workers(args: PeerArgs) -> Proc:
    env = dict(os.environ, BENCH_REDIS_URL=args.redis_url, PYTHONPATH=str(REPO_ROOT))
    cli = Path(sys.executable).parent / "taskiq"
    argv = [
        str(cli),
        "worker",
        "bench.peers.taskiq_app:broker",
        "--workers",
        str(WORKERS),
        "--app-dir",
        str(REPO_ROOT),
        "--log-level",
        "WARNING",
    ]
    return Proc("taskiq-workers", argv, log_path=args.log_dir / "taskiq-workers.log", env=env, cwd=REPO_ROOT).start()


async def wait_all_ready(handles: list, timeout_s: float) -> None:
    """Wait until every result is stored: `is_ready` checks run concurrently, CHECK_WINDOW at a time."""
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


async def run_batch(task, n: int, batch: int, timeout_s: float) -> tuple[float, float]:
    """Submit n tasks in concurrent chunks, then wait until every result is stored.

    Returns (seconds to the last result, seconds submitting).
    """
    started = time.perf_counter()
    handles = []
    for offset in range(0, n, batch):
        chunk = min(batch, n - offset)
        handles.extend(await asyncio.gather(*(task.kiq() for _ in range(chunk))))
    submitted = time.perf_counter()
    await wait_all_ready(handles, timeout_s)
    return time.perf_counter() - started, submitted - started


async def run_sequential(task, n: int, timeout_s: float) -> dict[str, list[float]]:
    """One task at a time: end to end, kiq() answered -> task started, kiq() called -> task started."""
    samples: dict[str, list[float]] = {"e2e": [], "dispatch": [], "submit_to_receive": []}
    for _ in range(n):
        started = time.perf_counter()
        called_at = time.time()
        handle = await task.kiq()
        sent_at = time.time()
        result = await handle.wait_result(check_interval=SEQUENTIAL_POLL_S, timeout=timeout_s)
        samples["e2e"].append(time.perf_counter() - started)
        if result.is_err:
            raise RuntimeError(f"taskiq no-op failed: {result.error!r}")
        worker_started_at = float(result.return_value)
        samples["dispatch"].append(worker_started_at - sent_at)
        samples["submit_to_receive"].append(worker_started_at - called_at)
    return samples


async def measure(args: PeerArgs) -> tuple[dict[str, Any], dict[str, list[float]]]:
    from bench.peers import taskiq_app

    await taskiq_app.broker.startup()
    try:
        await run_batch(taskiq_app.noop, args.warmup, args.batch, timeout_s=60.0)
        runs = []
        for _ in range(args.repeat):
            seconds, submit_s = await run_batch(taskiq_app.noop, args.n, args.batch, args.timeout_s)
            runs.append({**throughput(args.n, seconds), "submit_seconds": round(submit_s, 3)})
        samples = await run_sequential(taskiq_app.noop, args.seq, args.timeout_s)
    finally:
        await taskiq_app.broker.shutdown()
    return median_run(runs), samples


def main() -> None:
    args = parse_args()
    os.environ["BENCH_REDIS_URL"] = args.redis_url
    workers = start_workers(args)
    try:
        tput, samples = asyncio.run(measure(args))
        workers.check_alive()
    finally:
        workers.stop()
    emit(
        {
            "name": "taskiq",
            "versions": versions("taskiq", "taskiq-redis", "redis"),
            "setup": f"taskiq-redis ListQueueBroker + RedisAsyncResultBackend, {WORKERS} worker processes; "
            f"submitted in concurrent chunks; results checked with is_ready, {CHECK_WINDOW} at once "
            f"(sequential run: wait_result polling every {SEQUENTIAL_POLL_S * 1000:.0f} ms)",
            "throughput": tput,
            **latency_fields(samples["e2e"], samples["dispatch"], samples["submit_to_receive"]),
            "dispatch_measured_as": "kiq() returned -> task started (wall clock, worker side)",
        }
    )


if __name__ == "__main__":
    main()
