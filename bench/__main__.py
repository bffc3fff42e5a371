"""`python -m bench` (`make bench`): taskyard against its peers, mode by mode, in one run on one machine.

Every (mode, system) run starts from nothing: its own redis-server on a free port and, for taskyard,
its own PostgreSQL database `taskyard_bench_<hex>`, both removed when it ends. The peers run in
`bench/.venv-peers` (created on first use). Results: tables on stdout and
`bench/results/<timestamp>.json`; process logs in `bench/results/<timestamp>-logs/`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.modes import ALL_SYSTEMS, PEERS, Mode, RunContext
from bench.peers.common import REPO_ROOT
from bench.report import median_result, mode_table, ratios, summary, write_json


def registry() -> dict[str, Mode]:
    """Every mode, in the order they run. A new mode is one module exposing MODE, added here."""
    from bench.modes import batch, idle, open_loop, sql, streaming, submit_concurrent, submit_seq, watchers

    modes = (
        batch.MODE,
        submit_seq.MODE,
        submit_concurrent.MODE,
        open_loop.MODE,
        idle.MODE,
        streaming.MODE,
        watchers.MODE,
        sql.MODE,
    )
    return {mode.name: mode for mode in modes}


# (flag, default, --quick default, help)
SIZES: tuple[tuple[str, float, float, str], ...] = (
    ("n", 5000, 1000, "batch: tasks in the throughput run"),
    ("warmup", 50, 50, "tasks a system runs before it is measured (it also proves it is up)"),
    ("seq_submits", 1000, 200, "submit_seq: single submits, one at a time"),
    ("concurrent_submits", 5000, 1000, "submit_concurrent: single submits in all"),
    ("clients", 32, 32, "submit_concurrent: concurrent clients"),
    ("client_procs", 2, 2, "submit_concurrent, open_loop: client processes the clients are spread over"),
    ("rate", 500.0, 200.0, "open_loop: single submits per second"),
    ("duration_s", 60.0, 10.0, "open_loop: seconds of submitting"),
    ("drain_s", 30.0, 10.0, "open_loop: most seconds to wait for the last results after submitting"),
    ("idle_n", 300, 100, "idle: tasks in each sequential latency run"),
    ("stream_tasks", 500, 100, "streaming: tasks streaming at once"),
    ("stream_rate", 20.0, 20.0, "streaming: progress events per second per task"),
    ("stream_seconds", 10.0, 5.0, "streaming: seconds each task streams"),
    ("stream_agents", 2, 2, "streaming: agent processes the tasks are spread over"),
    ("watchers", 1000, 100, "watchers: watcher sockets"),
    ("watcher_procs", 4, 2, "watchers: processes the sockets are spread over"),
    ("watch_tasks", 100, 20, "watchers: tasks"),
    ("watch_events", 5, 5, "watchers: progress events per task"),
    ("sql_n", 200, 100, "sql: tasks on each counted path"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    modes = registry()
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for every mode (a smoke run)")
    parser.add_argument(
        "--mode", dest="modes", choices=list(modes), action="append", help="run only these modes (repeatable)"
    )
    parser.add_argument("--only", choices=ALL_SYSTEMS, action="append", help="run only these systems (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per (mode, system); the median is reported")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="bound on each measured phase")
    parser.add_argument("--batch", type=int, default=500, help="batch: tasks per submit batch (max 500)")
    parser.add_argument("--workers", type=int, default=2, help="taskyard worker processes (peers use 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="taskyard worker concurrency (per process)")
    parser.add_argument(
        "--api-replicas", type=int, default=1, help="taskyard API replicas, one port each (workers spread over them)"
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="taskyard API processes per replica on one port (`taskyard api --processes`; the kernel spreads "
        "connections)",
    )
    parser.add_argument("--submit-concurrency", type=int, default=2, help="batch: taskyard batch requests in flight")
    parser.add_argument(
        "--stream-frames",
        choices=("batch", "single"),
        default="batch",
        help="streaming: the agents send a loop turn's frames as one `batch` frame, as taskyard's worker does "
        "(default), or one WebSocket frame each, as an agent of the base protocol",
    )
    parser.add_argument(
        "--stream-beats",
        choices=("lockstep", "both"),
        default="both",
        help="streaming: `lockstep` streams every task on one shared beat (all tasks start at once: ~K events "
        "arrive together every 1/R s, the headline figures); `both` (default) then streams the same load again "
        "with each task's beat at its own random phase, as independent agents send, reported as `staggered`",
    )
    parser.add_argument(
        "--http-client",
        choices=("lean", "httpx"),
        default="lean",
        help="submit_seq, submit_concurrent, open_loop: taskyard's submitters send over a lean keep-alive client "
        "under uvloop (`lean`, default: a load generator's cost) or over httpx (`httpx`: a Python user's client, "
        "several times the API's CPU per POST); the peers always use their own enqueue call",
    )
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    for flag, default, _quick, text in SIZES:
        kind = float if isinstance(default, float) else int
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=f"{text} (default {default:g})")
    args = parser.parse_args(argv)
    for flag, default, quick, _ in SIZES:
        if getattr(args, flag) is None:
            setattr(args, flag, quick if args.quick else default)
    args.batch = max(1, min(args.batch, 500))
    args.repeat = max(1, args.repeat)
    args.modes = args.modes or list(modes)
    args.systems = [s for s in ALL_SYSTEMS if not args.only or s in args.only]
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


def prepare_peers(ctx: RunContext, modes: list[Mode]) -> dict[str, str]:
    """The peers' venv, when a selected mode runs a peer; returns {peer: error} for peers that cannot run."""
    wanted = {s for m in modes for s in m.systems if s in PEERS and s in ctx.args.systems}
    if not wanted:
        return {}
    from bench.peers.venv import peers_python

    try:
        python = peers_python(log=ctx.log_dir / "peers-venv.log")
    except (OSError, subprocess.SubprocessError) as exc:  # no PyPI or a failed install: taskyard still runs
        return {name: f"peers' venv: {exc}; see {ctx.log_dir / 'peers-venv.log'}" for name in wanted}
    ctx.peers_python.update({name: python for name in wanted})
    return {}


async def run_one(ctx: RunContext, mode: Mode, system: str, attempt: int) -> dict[str, Any]:
    """One (mode, system) run, bounded; a failure is returned as {"error"} and the run goes on."""
    log_dir = ctx.sub_log_dir(mode.name, system, attempt)
    bound_s = ctx.args.timeout_s * 3 + 300
    try:
        async with asyncio.timeout(bound_s):
            return await mode.run(ctx, system, log_dir)
    except Exception as exc:  # reported as FAILED with the reason; the trace is in the run's log dir
        (log_dir / "error.txt").write_text(traceback.format_exc())
        kind = "timed out" if isinstance(exc, TimeoutError) and not str(exc) else f"{type(exc).__name__}: {exc}"
        return {"error": f"{kind} (see {log_dir})"}


async def run_all(ctx: RunContext, modes: list[Mode]) -> dict[str, Any]:
    broken = prepare_peers(ctx, modes)
    out: dict[str, Any] = {}
    for mode in modes:
        systems = [s for s in mode.systems if s in ctx.args.systems]
        if not systems:
            print(f"[{mode.name}] skipped: it runs only {', '.join(mode.systems)}", flush=True)
            continue
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        # Repetitions interleave the systems, so a change in the box's load hits them alike.
        for attempt in range(ctx.args.repeat):
            for system in systems:
                print(f"[{mode.name}] {system} (run {attempt + 1}/{ctx.args.repeat}) ...", flush=True)
                if system in broken:
                    runs[system].append({"error": broken[system]})
                    continue
                load = os.getloadavg()
                result = await run_one(ctx, mode, system, attempt)
                result["loadavg"] = {"before": load, "after": os.getloadavg()}
                runs[system].append(result)
        results = {s: median_result(r, mode.metrics[0]) for s, r in runs.items()}
        out[mode.name] = {"title": mode.title, "results": results, "ratios": ratios(mode, results)}
        if ctx.args.repeat > 1:
            out[mode.name]["runs"] = runs
        print("\n" + mode_table(mode, results) + "\n", flush=True)
    return out


MODES = {"llm-stream": "bench.llm_stream"}
"""Other modes: `python -m bench <mode> [options]` runs that module's `main`."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MODES:
        import importlib

        return int(importlib.import_module(MODES[argv[0]]).main(argv[1:]))
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    ctx = RunContext(args=args, log_dir=args.results_dir / f"{stamp}-logs")
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    all_modes = registry()
    modes = [all_modes[name] for name in all_modes if name in args.modes]
    print(
        f"bench {stamp}: modes {', '.join(m.name for m in modes)}; systems {', '.join(args.systems)}"
        f"{' (quick)' if args.quick else ''}; logs in {ctx.log_dir}",
        flush=True,
    )
    mode_results = asyncio.run(run_all(ctx, modes))
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {
        "started_at": stamp,
        "machine": machine(),
        "taskyard_commit": git_commit(),
        "params": params,
        "modes": mode_results,
    }
    out = args.results_dir / f"{stamp}.json"
    write_json(out, report)
    print(summary(modes, mode_results))
    print(f"written {out}")
    failed = any("error" in r for m in mode_results.values() for r in m["results"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
