"""A streaming agent process: the agent protocol spoken by hand (docs/protocol.md), one agent per process.

On each `task/submit` it accepts, sends `events` progress frames at `rate` per second (each carrying
its send time, `data.t`, perf_counter: one clock for every process on the machine), then the result.
With `"stagger": true` in the task's input each task starts its beat at a random point of one interval
(`1/rate`), as independent agents would, instead of every task sending on the same beat (`stream_phase`).
With `"batch": true` in its params it negotiates the `batch` feature and, like taskyard's own worker, sends
what its tasks produced in one loop turn as one `batch` frame; without it, one WebSocket frame per frame
(an agent written against the base protocol).
It records the server's refusals by error name and how long each `ack` took (accept and result).
`python -m bench.ty.streamer --url ws://.../ws --params JSON`, agent id and token in BENCH_AGENT_ID /
BENCH_AGENT_TOKEN. Speaks `bench.childio`: `ready` once authenticated, `result` on each `report`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
import traceback
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

from bench.childio import emit

MAX_BATCH = 1000
"""Items per `batch` frame (docs/protocol.md)."""


def stream_phase(spec: dict[str, Any], rng: random.Random) -> float:
    """Seconds a task waits before its first progress frame: 0 on the shared beat (every task of a submit
    starts at once, so their frames come in bursts), else a uniform point of one interval (`1/rate`)."""
    rate = float(spec.get("rate", 1.0))
    if not spec.get("stagger") or rate <= 0:
        return 0.0
    return rng.random() / rate


def frame_item(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": type_, "ts": int(time.time()), "payload": payload}


def frame(type_: str, payload: dict[str, Any]) -> tuple[str, str]:
    item = frame_item(type_, payload)
    return item["id"], json.dumps(item)


class StreamAgent:
    def __init__(self, conn: ClientConnection, *, batch: bool = False) -> None:
        self._conn = conn
        self._batch = batch
        self._outbox: list[dict[str, Any]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._sent_at: dict[str, tuple[str, float]] = {}  # frame id -> (kind, perf_counter)
        self._acked: dict[str, asyncio.Future[None]] = {}
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._seen: set[tuple[str, int]] = set()
        self.running: dict[str, int] = {}
        self.ack_s: dict[str, list[float]] = {"task/accept": [], "task/result": []}
        self.errors: Counter[str] = Counter()
        self.progress_sent = 0
        self.finished = 0
        self.unacked_results = 0
        self.tasks_seen_before = 0
        self.cancels = 0
        self._rng = random.Random()

    async def send(self, type_: str, payload: dict[str, Any], *, track: bool = False) -> asyncio.Future[None] | None:
        item = frame_item(type_, payload)
        fut = None
        if track:
            fut = asyncio.get_running_loop().create_future()
            self._acked[item["id"]] = fut
            self._sent_at[item["id"]] = (type_, time.perf_counter())
        if self._batch:
            self._outbox.append(item)
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.create_task(self._flush())
        else:
            await self._conn.send(json.dumps(item))
        return fut

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # every task that has something to send this loop turn joins the frame
        while self._outbox:
            items, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
            if len(items) == 1:
                await self._conn.send(json.dumps(items[0]))
            else:
                await self._conn.send(json.dumps(frame_item("batch", {"frames": items})))

    async def read(self) -> None:
        async for raw in self._conn:
            msg = json.loads(raw)
            if msg.get("type") == "batch":
                for item in msg.get("payload", {}).get("frames", []):
                    self._on_frame(item.get("type"), item.get("payload", {}))
            else:
                self._on_frame(msg.get("type"), msg.get("payload", {}))

    def _on_frame(self, kind: str | None, payload: dict[str, Any]) -> None:
        if kind == "task/submit":
            key = (str(payload["taskId"]), int(payload["attempt"]))
            if key not in self._seen:  # at least once: a repeat of a known attempt is not new work
                self._seen.add(key)
                task = asyncio.create_task(self._run(key[0], key[1], payload.get("input") or {}))
                self._tasks[key] = task
                task.add_done_callback(self._forget)
        elif kind == "task/cancel":
            # The attempt was taken back (timed out, canceled): stop it, as docs/protocol.md asks.
            self.cancels += 1
            running = self._tasks.get((str(payload["taskId"]), int(payload["attempt"])))
            if running is not None:
                running.cancel()
                self.running.pop(str(payload["taskId"]), None)
        elif kind == "ack":
            ref = str(payload.get("ref"))
            sent = self._sent_at.pop(ref, None)
            if sent is not None:
                self.ack_s[sent[0]].append(time.perf_counter() - sent[1])
            fut = self._acked.pop(ref, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == "error":
            self.errors[str(payload.get("error"))] += 1

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._tasks.items()):
            if running is task:
                del self._tasks[key]

    async def _run(self, task_id: str, attempt: int, spec: dict[str, Any]) -> None:
        ref = {"taskId": task_id, "attempt": attempt}
        self.running[task_id] = attempt
        await self.send("task/accept", ref, track=True)
        events, rate = int(spec.get("events", 0)), float(spec.get("rate", 1.0))
        started = time.perf_counter() + stream_phase(spec, self._rng)
        for i in range(events):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.send("task/progress", {**ref, "data": {"t": time.perf_counter(), "i": i}})
            self.progress_sent += 1
        fut = await self.send("task/result", {**ref, "output": {"events": events}}, track=True)
        self.running.pop(task_id, None)
        try:
            if fut is not None:
                await asyncio.wait_for(fut, timeout=60)
            self.finished += 1
        except TimeoutError:
            self.unacked_results += 1

    async def heartbeat(self, interval_s: float, capacity: int) -> None:
        while True:
            tasks = [{"taskId": t, "attempt": a} for t, a in self.running.items()]
            payload = {"running": len(tasks), "capacity": capacity, "runningTasks": tasks[:4096]}
            await self._conn.send(frame("heartbeat", payload)[1])
            await asyncio.sleep(interval_s)

    def reset(self) -> None:
        self.ack_s = {"task/accept": [], "task/result": []}
        self.errors.clear()
        self.progress_sent = self.finished = self.unacked_results = self.cancels = 0
        self.tasks_seen_before = len(self._seen)

    def report(self) -> dict[str, Any]:
        return {
            "tasks_seen": len(self._seen) - self.tasks_seen_before,
            "finished": self.finished,
            "unacked_results": self.unacked_results,
            "cancels": self.cancels,
            "progress_sent": self.progress_sent,
            "errors": dict(self.errors),
            "ack_s": self.ack_s,
        }


async def run(url: str, params: dict[str, Any]) -> None:
    batch = bool(params.get("batch"))
    fields = {"role": "agent", "agent_id": os.environ["BENCH_AGENT_ID"], "agent_token": os.environ["BENCH_AGENT_TOKEN"]}
    query = urlencode({**fields, "features": "batch"} if batch else fields)
    async with connect(f"{url}?{query}", max_size=1 << 20, open_timeout=15, compression=None) as conn:
        first = json.loads(await asyncio.wait_for(conn.recv(), timeout=15))
        if first.get("type") != "auth/ok":
            raise RuntimeError(f"expected auth/ok, got {str(first)[:300]}")
        agent = StreamAgent(conn, batch=batch)
        interval = float(first["payload"].get("heartbeatIntervalS") or 5.0)
        reader = asyncio.create_task(agent.read())
        beat = asyncio.create_task(agent.heartbeat(interval, int(params["capacity"])))
        emit({"ready": {}})
        # `report` answers with what happened since the last report; `stop` (or EOF) ends the agent.
        while (command := (await asyncio.to_thread(sys.stdin.readline)).strip()) not in ("", "stop"):
            if command == "report":
                emit({"result": agent.report()})
                agent.reset()
        for task in (reader, beat):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--params", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(run(args.url, json.loads(args.params)))
    except Exception as exc:  # the driver reports it as FAILED; the trace goes to the log
        traceback.print_exc()
        emit({"error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
