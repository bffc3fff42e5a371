"""Latency on an idle system, one task at a time: submit -> result, and submit answer -> agent has the task.

taskyard: `POST /api/tasks` -> `task/status done` on a watcher socket (real workers); then tasks only
a probe agent (the protocol spoken by hand, in this process: one clock) can take, timed from the
submit answer to its `task/submit`. Peers: the worker's start time (wall clock, same machine) minus
the time the enqueue call returned. A worker can have the task before the client has its answer:
such samples count as 0 (`received_before_answer`), so `submit->agent` (from the call) is shown too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bench.modes import ALL_SYSTEMS, TASKYARD, Metric, Mode
from bench.peers.driver import peer_action
from bench.stats import latency_fields, summarize_ms
from bench.ty.stages import stage_breakdown
from bench.ty.system import describe, setup_text, taskyard_system, wait_for
from bench.ty.ws import ProbeAgent, Watcher

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext
    from bench.ty.system import TySystem

PROBE_CAPABILITY = "bench.probe"
STEP_TIMEOUT_S = 30.0


async def _e2e(ty: TySystem, watcher: Watcher, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        task_id = await ty.rest.submit_one()
        ended = await watcher.wait_ended(task_id, timeout_s=STEP_TIMEOUT_S)
        if watcher.ended_status[task_id] != "done":
            raise RuntimeError(f"task {task_id} ended {watcher.ended_status[task_id]}")
        samples.append(ended - started)
    return samples


async def _probe(ty: TySystem, watcher: Watcher, n: int) -> dict[str, Any]:
    agent_id, token = await ty.rest.create_agent("bench-probe", concurrency=1, capabilities=[PROBE_CAPABILITY])
    probe = ProbeAgent(ty.stack.ws_url, agent_id, token)
    await probe.start()
    try:
        await wait_for(lambda: ty.rest.agent_online(agent_id), timeout_s=30, what="the probe agent to be online")
        e2e: list[float] = []
        dispatch: list[float] = []
        submit_to_receive: list[float] = []
        ids: list[str] = []
        for _ in range(n):
            started = time.perf_counter()
            task_id = await ty.rest.submit_one(capabilities=[PROBE_CAPABILITY])
            answered = time.perf_counter()
            received = await probe.wait_received(task_id, timeout_s=STEP_TIMEOUT_S)
            ended = await watcher.wait_ended(task_id, timeout_s=STEP_TIMEOUT_S)
            ids.append(task_id)
            e2e.append(ended - started)
            dispatch.append(received - answered)
            submit_to_receive.append(received - started)
        if probe.errors:
            raise RuntimeError(f"probe agent got error frames: {probe.errors[:3]}")
    finally:
        await probe.close()
    return {**latency_fields(e2e, dispatch, submit_to_receive), "ids": ids}


async def _taskyard(ctx: RunContext, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    async with taskyard_system(ctx, log_dir, workers=a.workers, concurrency=a.concurrency) as ty:
        watcher = Watcher(ty.stack.ws_url, ty.rest.access_token)
        await watcher.start()
        try:
            await _e2e(ty, watcher, min(a.warmup, 20))
            e2e = await _e2e(ty, watcher, a.idle_n)
            probe = await _probe(ty, watcher, a.idle_n)
        finally:
            await watcher.close()
        result = {
            "latency_e2e_ms": summarize_ms(e2e),
            "latency_dispatch_ms": probe["latency_dispatch_ms"],
            "latency_submit_to_receive_ms": probe["latency_submit_to_receive_ms"],
            "latency_e2e_probe_ms": probe["latency_e2e_ms"],
            "probe_stages": await stage_breakdown(ty.rest, probe["ids"]),
            "setup": setup_text(ctx, a.workers, a.concurrency)
            + "; results from a watcher socket; dispatch timed on a probe agent in the bench process",
        }
        return describe(result, ty)


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    if system == TASKYARD:
        return await _taskyard(ctx, log_dir)
    a = ctx.args
    params = {"warmup": a.warmup, "n": a.idle_n, "timeout_s": STEP_TIMEOUT_S}
    out = await peer_action(ctx, system, log_dir, "idle", [params], units=a.idle_n, unit="task", timeout_s=a.timeout_s)
    raw = out["results"][0]
    return {
        **latency_fields(raw["e2e"], raw["dispatch"], raw["submit_to_receive"]),
        "setup": out["setup"],
        "versions": out["versions"],
        "dispatch_measured_as": "enqueue call returned -> task started (wall clock, worker side)",
    }


MODE = Mode(
    name="idle",
    title="latency on an idle system (one task at a time)",
    systems=ALL_SYSTEMS,
    metrics=(
        Metric("submit->result p50 ms", ("latency_e2e_ms", "p50")),
        Metric("submit->result p99 ms", ("latency_e2e_ms", "p99")),
        Metric("queued->agent p50 ms", ("latency_dispatch_ms", "p50")),
        Metric("queued->agent p99 ms", ("latency_dispatch_ms", "p99")),
        Metric("submit->agent p50 ms", ("latency_submit_to_receive_ms", "p50")),
        Metric("submit->agent p99 ms", ("latency_submit_to_receive_ms", "p99")),
    ),
    run=run,
    note="queued->agent = from the submit answer to the worker having the task (see the module docstring)",
)
