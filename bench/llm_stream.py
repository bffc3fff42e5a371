"""`python -m bench llm-stream`: one worker process streaming LLM answers from the fake OpenAI-compatible server.

N `llm.chat` tasks at once on one worker of concurrency C; the fake server streams each answer as T tokens D ms
apart, every token stamped with the time it was sent. One watcher (`subscribe all`) receives every
`task/stream` piece; per token, the added latency is its receipt time minus its send time (fake server ->
worker (SDK) -> API -> Redis -> fan-out -> watcher, one clock). Reported: tasks in flight at the peak,
tokens/s delivered, added latency p50/p99, the worker's and the API's CPU seconds and peak memory (RSS).
Measured, never asserted: the goal is 500 streams per worker process at flat memory, < 5 ms p99 per token.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.peers.common import REPO_ROOT
from bench.procs import Proc
from bench.report import write_json
from bench.services import PgDatabase, RedisServer
from bench.stats import summarize_ms

__all__ = ("main",)

_TICKS = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench llm-stream", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500, help="llm.chat tasks submitted at once")
    parser.add_argument("--concurrency", type=int, default=500, help="the worker's concurrency")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--token-ms", type=int, default=40, help="milliseconds between tokens")
    parser.add_argument("--batch-ms", type=float, default=5.0, help="TASKYARD_WORKER_LLM_STREAM_BATCH_MS")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Watch:
    """What the watcher saw: per-token latencies, tokens, running/done tasks over time."""

    def __init__(self) -> None:
        self.latencies_s: list[float] = []
        self.tokens = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.peak_in_flight = 0

    def feed(self, frame: dict[str, Any]) -> None:
        payload, now = frame["payload"], time.time()
        if frame["type"] == "task/stream":
            for token in payload["delta"].split():
                sent = float(token.rsplit("@", 1)[1])
                self.latencies_s.append(now - sent)
                self.tokens += 1
            self.first_at = self.first_at or now
            self.last_at = now
        elif frame["type"] == "task/status":
            if payload["status"] == "running":
                self.running.add(payload["taskId"])
            elif payload["status"] in ("done", "failed", "canceled"):
                self.running.discard(payload["taskId"])
                self.done.add(payload["taskId"])
            self.peak_in_flight = max(self.peak_in_flight, len(self.running))


async def _watch(ws_url: str, token: str, watch: _Watch, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with connect(f"{ws_url}?role=client", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()  # auth/ok
        await ws.send(json.dumps({"id": os.urandom(16).hex(), "type": "subscribe", "ts": int(time.time()),
                                  "payload": {"all": True}}))  # fmt: skip
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            watch.feed(json.loads(raw))


async def _measure(args: argparse.Namespace, stack: Any, fake_port: int) -> dict[str, Any]:
    from bench.ty.rest import RestClient

    rest = RestClient(stack.base_url)
    await rest.login(stack.config.admin_email, stack.config.admin_password)
    agent_id, agent_token = await rest.create_agent("llm-bench", concurrency=args.concurrency, capabilities=["llm"])
    worker = stack.start_worker(
        0,
        agent_id,
        agent_token,
        args.concurrency,
        env={
            "TASKYARD_WORKER_LLM_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
            "TASKYARD_WORKER_LLM_MODEL": "bench",
            "TASKYARD_WORKER_LLM_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TASKYARD_WORKER_LLM_STREAM_BATCH_MS": str(args.batch_ms),
        },
    )
    while not await rest.agent_online(agent_id):
        await asyncio.sleep(0.1)
    api_pid = next(p.pid for p in stack.procs if p.name == "api")
    watch, ready, stop = _Watch(), asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(_watch(stack.ws_url, rest.access_token, watch, ready, stop))
    await ready.wait()
    model = f"stream-{args.tokens}x{args.token_ms}ms"
    task = {"type": "llm.chat", "capabilities": ["llm"], "timeoutSeconds": 600,
            "input": {"model": model, "messages": [{"role": "user", "content": "bench"}]}}  # fmt: skip
    cpu_before = {"worker": _cpu_s(worker.pid), "api": _cpu_s(api_pid)}
    rss_peak = {"worker": _rss_mb(worker.pid), "api": _rss_mb(api_pid)}
    rss_start = dict(rss_peak)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=120) as http:
        headers = {"Authorization": f"Bearer {rest.access_token}"}
        for offset in range(0, args.tasks, 500):
            count = min(500, args.tasks - offset)
            response = await http.post("/api/tasks/batch", json={"tasks": [task] * count}, headers=headers)
            response.raise_for_status()
    while len(watch.done) < args.tasks and time.monotonic() - started < args.timeout_s:
        await asyncio.sleep(0.2)
        rss_peak = {
            "worker": max(rss_peak["worker"], _rss_mb(worker.pid)),
            "api": max(rss_peak["api"], _rss_mb(api_pid)),
        }
    elapsed = time.monotonic() - started
    cpu = {name: round(_cpu_s(pid) - cpu_before[name], 2) for name, pid in (("worker", worker.pid), ("api", api_pid))}
    stop.set()
    await watcher
    await rest.aclose()
    span = max(watch.last_at - watch.first_at, 1e-9)
    expected = args.tasks * args.tokens
    return {
        "tasks": args.tasks,
        "tasks_done": len(watch.done),
        "concurrency": args.concurrency,
        "tokens_per_task": args.tokens,
        "token_interval_ms": args.token_ms,
        "batch_ms": args.batch_ms,
        "peak_tasks_in_flight": watch.peak_in_flight,
        "tokens_received": watch.tokens,
        "tokens_expected": expected,
        "tokens_per_s": round(watch.tokens / span, 1),
        "added_latency_per_token_ms": summarize_ms(watch.latencies_s),
        "elapsed_s": round(elapsed, 2),
        "cpu_s": cpu,
        "rss_mb": {
            "start": {k: round(v, 1) for k, v in rss_start.items()},
            "peak": {k: round(v, 1) for k, v in rss_peak.items()},
        },
    }


def main(argv: list[str] | None = None) -> int:
    from bench.ty.stack import StackConfig, TaskyardStack

    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = args.results_dir / f"{stamp}-llm-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    redis, db = RedisServer(log_dir).start(), PgDatabase()
    data_dir = Path(tempfile.mkdtemp(prefix="taskyard-bench-llm-"))
    stack = TaskyardStack(
        StackConfig(redis_url=redis.url(0), database_url=db.sqlalchemy_url, log_dir=log_dir, data_dir=data_dir)
    )
    fake = Proc("fakellm", [sys.executable, "-m", "tests.fakellm", "--port", "0"], log_path=log_dir / "fakellm.log",
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT)  # fmt: skip
    try:
        db.create()
        stack.prepare()
        stack.start_api_and_scheduler()
        fake.start()
        port = _fake_port(fake)
        result = asyncio.run(_measure(args, stack, port))
    finally:
        fake.stop()
        stack.stop()
        db.drop()
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    out = args.results_dir / f"{stamp}-llm-stream.json"
    write_json(out, {"started_at": stamp, "mode": "llm-stream", "result": result})
    print(json.dumps(result, indent=2))
    print(f"\nwritten {out}")
    return 0 if result["tasks_done"] == args.tasks else 1


def _fake_port(fake: Proc) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fake.check_alive()
        for line in fake.log_path.read_text(errors="replace").splitlines():
            if line.startswith("listening on "):
                return int(line.split()[-1])
        time.sleep(0.05)
    raise RuntimeError("the fake LLM server did not start")


if __name__ == "__main__":
    sys.exit(main())
