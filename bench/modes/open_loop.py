"""Open loop: single submits at a fixed rate (`--rate` for `--duration-s`) whatever the system does;
submit -> result latency and whether the backlog (submitted, not yet finished) grows.

taskyard: `POST /api/tasks` from submitter processes, results seen as `task/status` on a watcher
socket subscribed to all of the user's tasks. Peers: their enqueue call, results from their backend.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from bench.children import go_all, start_all, stop_all
from bench.figures import open_loop_figures
from bench.modes import ALL_SYSTEMS, TASKYARD, Metric, Mode
from bench.modes.single_submits import client_figures, submitter_cpu_s, submitters
from bench.peers.driver import peer_action
from bench.ty.pgview import DoneCounter
from bench.ty.system import describe, setup_text, taskyard_system
from bench.ty.ws import Watcher

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext

CLIENT_WARMUP = 2


async def _taskyard(ctx: RunContext, log_dir: Path, procs: int) -> dict[str, Any]:
    a = ctx.args
    async with taskyard_system(ctx, log_dir, workers=a.workers, concurrency=a.concurrency) as ty:
        watcher = Watcher(ty.stack.ws_url, ty.rest.access_token)
        await watcher.start()
        try:
            params = [{"rate": a.rate / procs, "duration_s": a.duration_s, "warmup": CLIENT_WARMUP}] * procs
            children = submitters(ty, "open_loop", params, a.http_client)
            await start_all(children, ready_timeout_s=60)
            async with DoneCounter(ty.db) as done:
                await done.wait_for(CLIENT_WARMUP * procs, timeout_s=60)
            before = await ty.meter.open_window()
            client_cpu_s = submitter_cpu_s(children)
            results = await go_all(children, timeout_s=a.duration_s + a.timeout_s)
            samples = [s for r in results for s in r["samples"]]
            client = client_figures(children, client_cpu_s, len(samples), a.http_client)
            watcher.track([s[4] for s in samples if s[4] is not None])
            with contextlib.suppress(TimeoutError):
                await watcher.wait_tracked(a.drain_s)
            cost = await ty.meter.close_window(before, units=len(samples), unit="task")
            await stop_all(children)
        finally:
            await watcher.close()
        for sample in samples:
            sample[3] = watcher.ended_at.get(sample[4]) if sample[4] is not None else None
        refused: dict[str, int] = {}
        for r in results:
            for status, count in r.get("refused", {}).items():
                refused[status] = refused.get(status, 0) + count
        result = {
            "refused": refused,
            "client": client,
            **open_loop_figures([s[:4] for s in samples], rate=a.rate, duration_s=a.duration_s),
            "not_done": sum(
                1 for s in samples if s[4] is not None and watcher.ended_status.get(s[4], "done") != "done"
            ),
            "setup": setup_text(ctx, a.workers, a.concurrency)
            + f"; POST /api/tasks from {procs} process(es) ({a.http_client} HTTP client)"
            + "; results from a watcher socket",
            "cost": cost,
        }
        return describe(result, ty)


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    procs = max(1, a.client_procs)
    if system == TASKYARD:
        return await _taskyard(ctx, log_dir, procs)
    params = [
        {"rate": a.rate / procs, "duration_s": a.duration_s, "drain_s": a.drain_s, "timeout_s": a.timeout_s}
        | {"warmup": a.warmup if i == 0 else CLIENT_WARMUP}
        for i in range(procs)
    ]
    units = int(a.rate / procs * a.duration_s) * procs
    out = await peer_action(
        ctx, system, log_dir, "open_loop", params, units=units, unit="task", timeout_s=a.duration_s + a.drain_s + 120
    )
    samples = [s for r in out["results"] for s in r["samples"]]
    return {
        **open_loop_figures(samples, rate=a.rate, duration_s=a.duration_s),
        "setup": out["setup"] + f"; submitted from {procs} process(es)",
        "versions": out["versions"],
        "cost": out["cost"],
    }


MODE = Mode(
    name="open_loop",
    title="open loop: single submits at a fixed rate",
    systems=ALL_SYSTEMS,
    metrics=(
        Metric("due->result p50 ms", ("scheduled_to_result_ms", "p50")),
        Metric("due->result p99 ms", ("scheduled_to_result_ms", "p99")),
        Metric("submit->result p99 ms", ("submit_to_result_ms", "p99")),
        Metric("finished", ("finished",), higher_is_better=True),
        Metric("backlog slope /s", ("backlog_slope_per_s",), has_ratio=False),
        Metric("late submits", ("late_submits",), has_ratio=False),
        Metric("CPU ms/task (system)", ("cost", "cpu_ms_per_unit_system")),
        Metric("submitter CPU ms/submit", ("client", "cpu_ms_per_submit"), has_ratio=False),
    ),
    run=run,
    note="due->result counts from when a submit was due by the schedule; backlog = due but not finished, "
    "sampled each second (backlog_per_s in the JSON); late submits = the client was held back more than 5 ms",
)
