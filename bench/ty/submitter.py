"""A taskyard submitting client process: single `POST /api/tasks` calls, closed loop or at a fixed rate.

`python -m bench.ty.submitter --base-url URL --action submits|open_loop --params JSON [--http-client lean|httpx]`,
the access token in BENCH_TOKEN. Speaks `bench.childio`: warms its connections, `ready`, runs on `go`, `result`.
The answers carry the task ids, so the driver can join them with what its watcher saw.

`--http-client lean` (the default) sends through `bench.ty.lean_http` under uvloop: a load generator's cost
(a small fraction of the API's CPU per request), as wrk or a Go client would be. `httpx` is what a Python
user of the REST API would likely write; it costs about three times the API's own CPU per POST, which on a
2-core box starves the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import traceback
from typing import Any

import httpx
import msgspec

from bench.childio import emit, wait_command
from bench.ty.lean_http import LeanClient

TASK = {"type": "noop", "input": {}}
TASK_BODY = msgspec.json.encode(TASK)
MAX_IN_FLIGHT = 64
"""Open loop: submissions waiting for their answer at once (per process); past this the loop stops being
open and the lag shows as late submits. More would make the client the bottleneck (httpx's pool costs
grow with its connections) on a box where it shares the cores with the system under test."""
KEEPALIVE_EXPIRY_S = 2.0
"""Idle connections are dropped by the client well before uvicorn's 5 s keep-alive timeout closes them. With
httpx's default (also 5 s) a connection idle for about 5 s is reused just as the server closes it: the request
lands on a closing socket and fails with `httpx.ReadError` (connection reset). The pool hands requests to its
first free connection, so at a rate the API keeps up with, the connections a burst opened sit idle for seconds
and meet exactly that race; the open loop's ReadError was this."""


class _Created(msgspec.Struct):
    """The part of a 201 answer the bench reads."""

    id: str


_decode_created = msgspec.json.Decoder(_Created).decode


class Submitter:
    """Single submits over httpx (a Python user's client)."""

    def __init__(self, base_url: str, token: str, connections: int) -> None:
        limits = httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_EXPIRY_S
        )
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            limits=limits,
            timeout=httpx.Timeout(60.0, connect=10.0),
        )
        self.refused: dict[str, int] = {}

    async def submit(self) -> str | None:
        """The new task's id, or None when the API refused it (counted by status in `refused`)."""
        response = await self._http.post("/api/tasks", json=TASK)
        if response.status_code != 201:
            # An overloaded API may answer 503 (a dependency timed out): that is a figure, not a crash.
            self.refused[str(response.status_code)] = self.refused.get(str(response.status_code), 0) + 1
            return None
        return str(response.json()["id"])

    async def aclose(self) -> None:
        await self._http.aclose()


class LeanSubmitter:
    """Single submits over `LeanClient` (a load generator's client); the same answers as `Submitter`."""

    def __init__(self, base_url: str, token: str, connections: int) -> None:
        self._http = LeanClient(
            base_url,
            {"Authorization": f"Bearer {token}"},
            max_connections=connections,
            keepalive_expiry_s=KEEPALIVE_EXPIRY_S,
            timeout_s=60.0,
        )
        self.refused: dict[str, int] = {}

    async def submit(self) -> str | None:
        """The new task's id, or None when the API refused it (counted by status in `refused`)."""
        response = await self._http.post("/api/tasks", TASK_BODY)
        if response.status != 201:
            self.refused[str(response.status)] = self.refused.get(str(response.status), 0) + 1
            return None
        return _decode_created(response.body).id

    async def aclose(self) -> None:
        await self._http.aclose()


AnySubmitter = Submitter | LeanSubmitter


async def submits(sub: AnySubmitter, n: int, clients: int) -> dict[str, Any]:
    """`clients` loops, each one POST at a time, n in all; [started, answered, task id] per submit."""
    answers: list[list[Any]] = []
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]

    async def client(count: int) -> None:
        for _ in range(count):
            t0 = time.perf_counter()
            task_id = await sub.submit()
            if task_id is not None:
                answers.append([t0, time.perf_counter(), task_id])

    started = time.perf_counter()
    await asyncio.gather(*(client(count) for count in shares))
    return {"started": started, "submitted": time.perf_counter(), "answers": answers, "refused": sub.refused}


async def open_loop(sub: AnySubmitter, rate: float, duration_s: float) -> dict[str, Any]:
    """One POST every 1/rate s whatever the answers do: [scheduled, called, answered, None, task id]."""
    samples: list[list[Any]] = []
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    started = time.perf_counter()

    async def one(scheduled: float) -> None:
        try:
            sample: list[Any] = [scheduled, time.perf_counter(), None, None, None]
            samples.append(sample)
            sample[4] = await sub.submit()
            sample[2] = time.perf_counter()
        finally:
            gate.release()

    tasks = []
    for i in range(int(rate * duration_s)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()  # a full gate holds the schedule back: that submit is late, and says so
        tasks.append(asyncio.create_task(one(started + i / rate)))
    await asyncio.gather(*tasks)
    return {"started": started, "samples": samples, "refused": sub.refused}


async def run(args: argparse.Namespace) -> None:
    params = json.loads(args.params)
    connections = params.get("clients", 1) if args.action == "submits" else MAX_IN_FLIGHT
    kind = LeanSubmitter if args.http_client == "lean" else Submitter
    sub = kind(args.base_url, os.environ["BENCH_TOKEN"], connections)
    try:
        warm = params.get("warmup", 0)
        if None in await asyncio.gather(*(sub.submit() for _ in range(warm))):
            raise RuntimeError(f"warm-up submits refused: {sub.refused}")
        emit({"ready": {"warm": warm}})
        await asyncio.to_thread(wait_command, "go")
        if args.action == "submits":
            result = await submits(sub, params["n"], params["clients"])
        else:
            result = await open_loop(sub, params["rate"], params["duration_s"])
    finally:
        await sub.aclose()
    emit({"result": result})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--action", required=True, choices=("submits", "open_loop"))
    parser.add_argument("--params", required=True)
    parser.add_argument("--http-client", choices=("lean", "httpx"), default="lean")
    args = parser.parse_args()
    try:
        if args.http_client == "lean":
            # The load generator's loop: uvloop (uvicorn's standard extra ships it) costs less per socket event.
            import uvloop

            uvloop.run(run(args))
        else:
            asyncio.run(run(args))
    except Exception as exc:  # the driver reports it as FAILED; the trace goes to the log
        traceback.print_exc()
        emit({"error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc
    wait_command("stop")


if __name__ == "__main__":
    main()
