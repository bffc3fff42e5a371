"""Batch throughput: N no-op tasks submitted in batches, timed to the last result (taskyard: committed
in PostgreSQL; peers: in their Redis result backend), with the cost per task of that window.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from bench.figures import batch_figures
from bench.modes import ALL_SYSTEMS, TASKYARD, Metric, Mode
from bench.peers.driver import peer_action
from bench.ty.pgview import DoneCounter
from bench.ty.stages import stage_breakdown, status_counts
from bench.ty.system import describe, setup_text, taskyard_system

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext


async def _taskyard(ctx: RunContext, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    async with taskyard_system(ctx, log_dir, workers=a.workers, concurrency=a.concurrency) as ty:
        warm = await ty.rest.submit_batch(a.warmup)
        async with DoneCounter(ty.db) as done:
            await done.wait_for(len(warm), timeout_s=60)
            base = await done.count()
            before = await ty.meter.open_window()
            gate = asyncio.Semaphore(a.submit_concurrency)

            async def submit(count: int) -> list[str]:
                async with gate:
                    return await ty.rest.submit_batch(count)

            started = time.perf_counter()
            sizes = [min(a.batch, a.n - offset) for offset in range(0, a.n, a.batch)]
            batches = await asyncio.gather(*(submit(size) for size in sizes))
            submitted = time.perf_counter()
            finished = await done.wait_for(base + a.n, timeout_s=a.timeout_s)
            cost = await ty.meter.close_window(before, units=a.n, unit="task")
        ids = [task_id for batch in batches for task_id in batch]
        result = {
            **batch_figures({"n": a.n, "started": started, "submitted": submitted, "finished": finished}),
            "measured_to": "every task done in PostgreSQL",
            "setup": setup_text(ctx, a.workers, a.concurrency)
            + f"; POST /api/tasks/batch of {a.batch}, {a.submit_concurrency} in flight",
            "cost": cost,
            "stages": await stage_breakdown(ty.rest, ids),
            "statuses": await status_counts(ty.rest),
        }
        return describe(result, ty)


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    if system == TASKYARD:
        return await _taskyard(ctx, log_dir)
    a = ctx.args
    params = {"warmup": a.warmup, "n": a.n, "chunk": a.batch, "timeout_s": a.timeout_s}
    out = await peer_action(ctx, system, log_dir, "batch", [params], units=a.n, unit="task", timeout_s=a.timeout_s + 60)
    return {
        **batch_figures(out["results"][0]),
        "measured_to": "every result in the Redis result backend",
        "setup": out["setup"],
        "versions": out["versions"],
        "cost": out["cost"],
    }


MODE = Mode(
    name="batch",
    title="batch throughput (no-op tasks, submitted in batches)",
    systems=ALL_SYSTEMS,
    metrics=(
        Metric("tasks/s", ("tasks_per_s",), higher_is_better=True),
        Metric("submit s", ("submit_seconds",)),
        Metric("CPU ms/task (system)", ("cost", "cpu_ms_per_unit_system")),
        Metric("Redis cmds/task", ("cost", "redis_commands_per_unit")),
    ),
    run=run,
)
