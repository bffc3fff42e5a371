"""Streaming: K tasks x R progress events/s into one API process, delivered to one watcher socket.

Streaming agents and the watcher are processes of their own (the protocol spoken by hand, as any
non-Python agent would); every progress event carries the agent's send time, so the watcher times
agent -> watcher. First one task streams on the idle system (the latency the path adds by itself),
then the load. taskyard only: the peers have no progress stream to watchers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.children import stop_all
from bench.modes import TASKYARD, Metric, Mode
from bench.ty.pgview import ENDED, DoneCounter
from bench.ty.stages import status_counts
from bench.ty.streams import agent_figures, reports, start_agents, start_watchers, stream_tasks, watcher_figures
from bench.ty.system import describe, taskyard_system

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext

IDLE_EVENTS = 20
IDLE_RATE = 5.0


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    events = int(a.stream_rate * a.stream_seconds)
    async with taskyard_system(ctx, log_dir, workers=0, concurrency=0) as ty, DoneCounter(ty.db, ENDED) as done:
        agents = await start_agents(ty, a.stream_agents, a.stream_tasks, public=False, batch=a.stream_frames == "batch")
        token = ty.rest.access_token
        idle_watch = await start_watchers(ty, 1, 1, token)
        await stream_tasks(ty.rest, 1, events=IDLE_EVENTS, rate=IDLE_RATE)
        await done.wait_for(1, timeout_s=60)
        await ty.meter.wait_quiet()
        idle = watcher_figures(await reports(idle_watch))
        await reports(agents)
        await stop_all(idle_watch)

        watch = await start_watchers(ty, 1, 1, token)
        base = await done.count()
        before = await ty.meter.open_window()
        await stream_tasks(ty.rest, a.stream_tasks, events=events, rate=a.stream_rate)
        await done.wait_for(base + a.stream_tasks, timeout_s=a.stream_seconds + a.timeout_s)
        await ty.meter.wait_quiet()
        seen = watcher_figures(await reports(watch))
        sent = agent_figures(await reports(agents))
        cost = await ty.meter.close_window(before, units=max(1, seen["progress"]), unit="progress event delivered")
        result = {
            "offered_events_per_s": a.stream_tasks * a.stream_rate,
            "watcher": seen,
            "agents": sent,
            "statuses": await status_counts(ty.rest),
            "idle": {"watcher": idle, "events": IDLE_EVENTS, "rate": IDLE_RATE},
            "setup": f"{ctx.args.api_replicas} API process(es), 1 scheduler, {a.stream_agents} streaming agent "
            f"process(es) sending {a.stream_frames} frames, {a.stream_tasks} tasks x {a.stream_rate:g} events/s x "
            f"{a.stream_seconds:g} s, one watcher socket subscribed to all tasks",
            "cost": cost,
        }
        return describe(result, ty)


MODE = Mode(
    name="streaming",
    title="streaming progress: K tasks x R events/s into one API, to one watcher",
    systems=(TASKYARD,),
    metrics=(
        Metric("events/s delivered", ("watcher", "progress_per_s"), higher_is_better=True),
        Metric("events sent", ("agents", "progress_sent"), higher_is_better=True),
        Metric("events delivered", ("watcher", "progress"), higher_is_better=True),
        Metric("agent->watcher p50 ms", ("watcher", "agent_to_watcher_ms", "p50")),
        Metric("agent->watcher p99 ms", ("watcher", "agent_to_watcher_ms", "p99")),
        Metric("idle: agent->watcher p50", ("idle", "watcher", "agent_to_watcher_ms", "p50")),
        Metric("idle: agent->watcher p99", ("idle", "watcher", "agent_to_watcher_ms", "p99")),
        Metric("result ack p99 ms", ("agents", "result_ack_ms", "p99")),
        Metric("frames refused", ("agents", "refused_total")),
        Metric("CPU ms/event (system)", ("cost", "cpu_ms_per_unit_system")),
    ),
    run=run,
    note="taskyard only (the peers have no watcher stream); refusals by name in agents.refused; "
    "events are coalesced to the API's progress rate per task, so delivered <= sent",
)
