"""`python -m bench` (`make bench`): taskyard against dramatiq and taskiq on one no-op workload.

One run owns its services: a private redis-server on a free port (taskyard db 0, dramatiq db 1,
taskiq db 2) and a PostgreSQL database `taskyard_bench_<hex>`, both removed at the end. The peers run
in `bench/.venv-peers` (created on first run). Results: a table on stdout and
`bench/results/<timestamp>.json`; process logs in `bench/results/<timestamp>-logs/`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from bench.peers.common import REPO_ROOT
from bench.report import ratios, table, write_json
from bench.services import PgDatabase, RedisServer

SYSTEMS = ("taskyard", "dramatiq", "taskiq")
PEER_DB = {"dramatiq": 1, "taskiq": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 throughput / 100 sequential")
    parser.add_argument("--n", type=int, help="tasks in the throughput run (default 5,000; --quick 1,000)")
    parser.add_argument("--seq", type=int, help="tasks in each sequential latency run (default 300; --quick 100)")
    parser.add_argument("--batch", type=int, default=500, help="tasks per submit batch (max 500)")
    parser.add_argument("--warmup", type=int, default=50, help="tasks run before measuring")
    parser.add_argument("--workers", type=int, default=2, help="taskyard worker processes (peers use 2)")
    parser.add_argument("--api-replicas", type=int, default=1, help="taskyard API processes (workers spread over them)")
    parser.add_argument("--concurrency", type=int, default=64, help="taskyard worker concurrency (per process)")
    parser.add_argument("--submit-concurrency", type=int, default=2, help="taskyard batch requests in flight")
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs per system; the median is reported")
    parser.add_argument("--only", choices=SYSTEMS, action="append", help="run only these systems (repeatable)")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="bound on each measured phase")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.n = args.n or (1000 if args.quick else 5000)
    args.seq = args.seq or (100 if args.quick else 300)
    args.batch = max(1, min(args.batch, 500))
    return args


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform()}


def git_commit() -> str:
    """The commit the taskyard numbers belong to (`+dirty` when the tree has local changes)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def run_taskyard(args: argparse.Namespace, redis: RedisServer, log_dir: Path) -> dict[str, Any]:
    from bench.ty.stack import StackConfig, TaskyardStack
    from bench.ty.workload import Workload, run_workload

    db = PgDatabase()
    data_dir = Path(tempfile.mkdtemp(prefix="taskyard-bench-data-"))
    stack = TaskyardStack(
        StackConfig(redis_url=redis.url(0), database_url=db.sqlalchemy_url, log_dir=log_dir, data_dir=data_dir),
        api_replicas=args.api_replicas,
    )
    work = Workload(
        n=args.n,
        seq=args.seq,
        batch=args.batch,
        warmup=args.warmup,
        workers=args.workers,
        concurrency=args.concurrency,
        submit_concurrency=args.submit_concurrency,
        timeout_s=args.timeout_s,
        repeat=max(1, args.repeat),
    )
    setup = (
        f"{args.api_replicas} API process(es), 1 scheduler, "
        f"{args.workers} worker processes x concurrency {args.concurrency}; "
        f"batches of {args.batch} ({args.submit_concurrency} in flight); results in PostgreSQL {{pg}}"
    )
    try:
        db.create()
        stack.prepare()
        stack.start_api_and_scheduler()
        result = asyncio.run(run_workload(stack, db.url, work))
        stack.check_alive()
        return {
            "name": "taskyard",
            "setup": setup.format(pg=db.version()),
            **result,
            "dispatch_measured_as": "POST /api/tasks answered -> probe agent received task/submit (one clock)",
        }
    except Exception as exc:  # the run goes on with the peers; the report says what failed and where
        traceback.print_exc()
        return {
            "name": "taskyard",
            "setup": setup.format(pg=""),
            "error": f"{type(exc).__name__}: {exc}",
            "logs": str(log_dir),
        }
    finally:
        stack.stop()
        db.drop()
        shutil.rmtree(data_dir, ignore_errors=True)


MODES = {"llm-stream": "bench.llm_stream"}
"""Other modes: `python -m bench <mode> [options]` runs that module's `main`."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MODES:
        import importlib

        return int(importlib.import_module(MODES[argv[0]]).main(argv[1:]))
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = args.results_dir / f"{stamp}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    wanted = [name for name in SYSTEMS if not args.only or name in args.only]
    print(
        f"bench {stamp}: n={args.n} seq={args.seq} batch={args.batch}; systems {', '.join(wanted)}; logs in {log_dir}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    redis = RedisServer(log_dir).start()
    try:
        if "taskyard" in wanted:
            print("running taskyard ...", flush=True)
            load_before = os.getloadavg()
            results["taskyard"] = run_taskyard(args, redis, log_dir)
            results["taskyard"]["loadavg"] = {"before": load_before, "after": os.getloadavg()}
        peers = [name for name in wanted if name in PEER_DB]
        if peers:
            from bench.peers.runner import run_peer
            from bench.peers.venv import peers_python

            try:
                python = peers_python(log=log_dir / "peers-venv.log")
            except (OSError, subprocess.SubprocessError) as exc:
                # No PyPI, or a failed install: report it and keep the numbers we have.
                python = None
                for name in peers:
                    results[name] = {"name": name, "error": f"peers' venv: {exc}; see {log_dir / 'peers-venv.log'}"}
            for name in peers if python is not None else []:
                print(f"running {name} ...", flush=True)
                load_before = os.getloadavg()
                results[name] = run_peer(
                    name,
                    python=python,
                    redis_url=redis.url(PEER_DB[name]),
                    n=args.n,
                    seq=args.seq,
                    batch=args.batch,
                    log_dir=log_dir,
                    timeout_s=args.timeout_s,
                    repeat=max(1, args.repeat),
                )
                results[name]["loadavg"] = {"before": load_before, "after": os.getloadavg()}
        redis_version = redis.version()
    finally:
        redis.stop()
    report = {
        "started_at": stamp,
        "machine": machine(),
        "redis": redis_version,
        "taskyard_commit": git_commit(),
        "params": {
            "n": args.n,
            "seq": args.seq,
            "batch": args.batch,
            "warmup": args.warmup,
            "api_replicas": args.api_replicas,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "quick": args.quick,
            "repeat": args.repeat,
        },
        "results": results,
        "ratios": ratios(results),
    }
    out = args.results_dir / f"{stamp}.json"
    write_json(out, report)
    print()
    print(table(results))
    print(f"\nwritten {out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
