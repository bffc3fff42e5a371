"""A peer's client process (peers' venv): warm up, say `ready`, run one action on `go`, answer `result`.

`python -m bench.peers.client --peer dramatiq --action batch --params '{"n": 1000, ...}'`, with
BENCH_REDIS_URL in the environment. The driver (`bench.peers.driver`) owns the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import traceback
from importlib import metadata
from typing import Any

from bench.childio import emit, wait_command
from bench.peers import actions_async, actions_sync, adapters

WARMUP_TIMEOUT_S = 60.0


def versions(peer: str) -> dict[str, str]:
    found = {}
    for dist in adapters.VERSIONS[peer]:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "missing"
    return found


def run_sync(peer: str, action: str, p: dict[str, Any]) -> dict[str, Any]:
    adapter: Any = adapters.SYNC[peer]()
    try:
        # The warm-up also proves the workers are up: its results come back only once they consume.
        actions_sync.batch(adapter, p.get("warmup", 0), WARMUP_TIMEOUT_S)
        emit({"ready": versions(peer)})
        wait_command("go")
        timeout_s = p["timeout_s"]
        if action == "batch":
            return actions_sync.batch(adapter, p["n"], timeout_s)
        if action == "submits":
            return actions_sync.submits(adapter, p["n"], p["clients"], timeout_s)
        if action == "open_loop":
            return actions_sync.open_loop(adapter, p["rate"], p["duration_s"], p["drain_s"])
        if action == "idle":
            return actions_sync.idle(adapter, p["n"], timeout_s)
        raise ValueError(f"unknown action {action}")
    finally:
        adapter.close()


async def run_async(peer: str, action: str, p: dict[str, Any]) -> dict[str, Any]:
    adapter: Any = adapters.ASYNC[peer]()
    await adapter.start()
    try:
        await actions_async.batch(adapter, p.get("warmup", 0), 500, WARMUP_TIMEOUT_S)
        emit({"ready": versions(peer)})
        await asyncio.to_thread(wait_command, "go")
        timeout_s = p["timeout_s"]
        if action == "batch":
            return await actions_async.batch(adapter, p["n"], p.get("chunk", 500), timeout_s)
        if action == "submits":
            return await actions_async.submits(adapter, p["n"], p["clients"], timeout_s)
        if action == "open_loop":
            return await actions_async.open_loop(adapter, p["rate"], p["duration_s"], p["drain_s"])
        if action == "idle":
            return await actions_async.idle(adapter, p["n"], timeout_s)
        raise ValueError(f"unknown action {action}")
    finally:
        await adapter.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True, choices=[*adapters.SYNC, *adapters.ASYNC])
    parser.add_argument("--action", required=True)
    parser.add_argument("--params", required=True, help="JSON object")
    args = parser.parse_args()
    params = json.loads(args.params)
    try:
        if args.peer in adapters.SYNC:
            result = run_sync(args.peer, args.action, params)
        else:
            result = asyncio.run(run_async(args.peer, args.action, params))
    except Exception as exc:  # the driver reports it as FAILED with this text; the trace goes to the log
        traceback.print_exc()
        emit({"error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc
    emit({"result": result})
    wait_command("stop")


if __name__ == "__main__":
    main()
