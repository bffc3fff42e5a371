"""Where a task's time went, from its recorded history (`GET /api/tasks/{id}`, events' `at`), on a sample.

Read after the measured window (the reads would otherwise count as the system's cost). `queued` is
stamped when the API creates the task, the other statuses by the state-changing step (millisecond
resolution), so `queued->assigned` also holds the submit's commit and the enqueue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import TYPE_CHECKING, Any

from bench.stats import summarize_ms

if TYPE_CHECKING:
    from bench.ty.rest import RestClient

STAGES = (("queued", "assigned"), ("assigned", "running"), ("running", "done"), ("queued", "done"))
SAMPLE = 100
READS_IN_FLIGHT = 8


async def stage_breakdown(rest: RestClient, task_ids: list[str], *, sample: int = SAMPLE) -> dict[str, Any]:
    """p50/p99 per stage over up to `sample` random tasks, and how many of them needed a second attempt."""
    chosen = random.sample(task_ids, min(sample, len(task_ids)))
    gate = asyncio.Semaphore(READS_IN_FLIGHT)

    async def read(task_id: str) -> dict[str, Any]:
        async with gate:
            return await rest.task(task_id)

    tasks = await asyncio.gather(*(read(t) for t in chosen))
    times: list[dict[str, float]] = []
    for task in tasks:
        first: dict[str, float] = {}
        for event in task.get("events") or []:
            if event.get("type") == "task/status" and event.get("status"):
                first.setdefault(str(event["status"]), dt.datetime.fromisoformat(event["at"]).timestamp())
        times.append(first)
    out: dict[str, Any] = {"sampled": len(tasks), "retried": sum(1 for t in tasks if int(t.get("attempt", 1)) > 1)}
    for a, b in STAGES:
        out[f"{a}->{b}_ms"] = summarize_ms([t[b] - t[a] for t in times if a in t and b in t])
    return out


async def status_counts(rest: RestClient) -> dict[str, int]:
    """Every status' total for the caller (REST listing), zeros left out."""
    names = ("scheduled", "queued", "assigned", "running", "done", "failed", "canceled")
    counts = await asyncio.gather(*(rest.count(name) for name in names))
    return {name: n for name, n in zip(names, counts, strict=True) if n}
