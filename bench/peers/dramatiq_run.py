"""Run the no-op workload on dramatiq (2 processes x 8 threads) and print one JSON line.

Run with the peers' venv: `bench/.venv-peers/bin/python -m bench.peers.dramatiq_run --redis-url ...`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bench.peers.common import REPO_ROOT, PeerArgs, emit, parse_args, versions
from bench.procs import Proc
from bench.stats import latency_fields, median_run, throughput

PROCESSES = 2
THREADS = 8


def start_workers(args: PeerArgs) -> Proc:
    env = dict(os.environ, BENCH_REDIS_URL=args.redis_url, PYTHONPATH=str(REPO_ROOT))
    cli = Path(sys.executable).parent / "dramatiq"
    argv = [
        str(cli),
        "bench.peers.dramatiq_app",
        "--processes",
        str(PROCESSES),
        "--threads",
        str(THREADS),
        "--path",
        str(REPO_ROOT),
    ]
    return Proc(
        "dramatiq-workers", argv, log_path=args.log_dir / "dramatiq-workers.log", env=env, cwd=REPO_ROOT
    ).start()


def run_batch(actor, backend, n: int, timeout_s: float) -> tuple[float, float]:
    """Send n messages, then wait for every result: (seconds to the last result, seconds sending)."""
    started = time.perf_counter()
    messages = [actor.send() for _ in range(n)]
    submitted = time.perf_counter()
    for message in messages:
        backend.get_result(message, block=True, timeout=int(timeout_s * 1000))
    return time.perf_counter() - started, submitted - started


def run_sequential(actor, backend, n: int, timeout_s: float) -> dict[str, list[float]]:
    """One message at a time: end to end, send() answered -> actor started, send() called -> actor started."""
    samples: dict[str, list[float]] = {"e2e": [], "dispatch": [], "submit_to_receive": []}
    for _ in range(n):
        started = time.perf_counter()
        called_at = time.time()
        message = actor.send()
        sent_at = time.time()
        worker_started_at = float(backend.get_result(message, block=True, timeout=int(timeout_s * 1000)))
        samples["e2e"].append(time.perf_counter() - started)
        samples["dispatch"].append(worker_started_at - sent_at)
        samples["submit_to_receive"].append(worker_started_at - called_at)
    return samples


def main() -> None:
    args = parse_args()
    os.environ["BENCH_REDIS_URL"] = args.redis_url
    from bench.peers import dramatiq_app

    workers = start_workers(args)
    try:
        # The warm-up also proves the workers are up: its results only come back once they consume.
        run_batch(dramatiq_app.noop, dramatiq_app.backend, args.warmup, timeout_s=60.0)
        workers.check_alive()
        runs = []
        for _ in range(args.repeat):
            seconds, submit_s = run_batch(dramatiq_app.noop, dramatiq_app.backend, args.n, args.timeout_s)
            runs.append({**throughput(args.n, seconds), "submit_seconds": round(submit_s, 3)})
        samples = run_sequential(dramatiq_app.noop, dramatiq_app.backend, args.seq, args.timeout_s)
    finally:
        workers.stop()
    emit(
        {
            "name": "dramatiq",
            "versions": versions("dramatiq", "redis"),
            "setup": f"RedisBroker + Redis results backend, {PROCESSES} processes x {THREADS} threads; "
            "messages sent one by one (dramatiq has no batch enqueue)",
            "throughput": median_run(runs),
            **latency_fields(samples["e2e"], samples["dispatch"], samples["submit_to_receive"]),
            "dispatch_measured_as": "send() returned -> actor started (wall clock, worker side)",
        }
    )


if __name__ == "__main__":
    main()
