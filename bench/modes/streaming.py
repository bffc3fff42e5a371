"""Streaming: K tasks x R progress events/s into one API process, delivered to one watcher socket.

Streaming agents and the watcher are processes of their own (the protocol spoken by hand, as any
non-Python agent would); every progress event carries the agent's send time, so the watcher times
agent -> watcher. First one task streams on the idle system (the latency the path adds by itself),
then the load: every task on one shared beat (they start together, so ~K events arrive at once every
1/R s: the headline figures), then, with `--stream-beats both` (the default), the same load with each
task's beat at its own random phase (`staggered`: independent agents are not in lock step).
taskyard only: the peers have no progress stream to watchers.
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

    from bench.children import Child
    from bench.modes import RunContext
    from bench.ty.system import TySystem

IDLE_EVENTS = 100
"""Events of the idle phase: enough for its p99 not to be simply the slowest one (it was 20 until 2026-11-29)."""
IDLE_RATE = 10.0
"""Per second, well under the progress gate's rate: each event finds the path idle."""


async def _loaded(
    ctx: RunContext, ty: TySystem, done: DoneCounter, agents: list[Child], *, stagger: bool
) -> dict[str, Any]:
    """One loaded phase: what the watcher and the agents saw, and its cost per event delivered."""
    a = ctx.args
    events = int(a.stream_rate * a.stream_seconds)
    watch = await start_watchers(ty, 1, 1, ty.rest.access_token)
    base = await done.count()
    before = await ty.meter.open_window()
    await stream_tasks(ty.rest, a.stream_tasks, events=events, rate=a.stream_rate, stagger=stagger)
    await done.wait_for(base + a.stream_tasks, timeout_s=a.stream_seconds + a.timeout_s)
    await ty.meter.wait_quiet()
    seen = watcher_figures(await reports(watch))
    sent = agent_figures(await reports(agents))
    cost = await ty.meter.close_window(before, units=max(1, seen["progress"]), unit="progress event delivered")
    await stop_all(watch)
    return {"watcher": seen, "agents": sent, "cost": cost}


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    async with taskyard_system(ctx, log_dir, workers=0, concurrency=0) as ty, DoneCounter(ty.db, ENDED) as done:
        agents = await start_agents(ty, a.stream_agents, a.stream_tasks, public=False, batch=a.stream_frames == "batch")
        idle_watch = await start_watchers(ty, 1, 1, ty.rest.access_token)
        await stream_tasks(ty.rest, 1, events=IDLE_EVENTS, rate=IDLE_RATE)
        await done.wait_for(1, timeout_s=60)
        await ty.meter.wait_quiet()
        idle = watcher_figures(await reports(idle_watch))
        await reports(agents)
        await stop_all(idle_watch)

        lockstep = await _loaded(ctx, ty, done, agents, stagger=False)
        staggered = await _loaded(ctx, ty, done, agents, stagger=True) if a.stream_beats == "both" else None
        result = {
            "offered_events_per_s": a.stream_tasks * a.stream_rate,
            **lockstep,
            "statuses": await status_counts(ty.rest),
            "idle": {"watcher": idle, "events": IDLE_EVENTS, "rate": IDLE_RATE},
            "setup": f"{ctx.args.api_replicas} API process(es), 1 scheduler, {a.stream_agents} streaming agent "
            f"process(es) sending {a.stream_frames} frames, {a.stream_tasks} tasks x {a.stream_rate:g} events/s x "
            f"{a.stream_seconds:g} s on one shared beat{', then on staggered beats' if staggered else ''}, "
            "one watcher socket subscribed to all tasks",
        }
        if staggered is not None:
            result["staggered"] = staggered
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
        Metric("staggered: events/s delivered", ("staggered", "watcher", "progress_per_s"), higher_is_better=True),
        Metric("staggered: agent->watcher p50", ("staggered", "watcher", "agent_to_watcher_ms", "p50")),
        Metric("staggered: agent->watcher p99", ("staggered", "watcher", "agent_to_watcher_ms", "p99")),
        Metric("staggered: frames refused", ("staggered", "agents", "refused_total")),
        Metric("staggered: CPU ms/event", ("staggered", "cost", "cpu_ms_per_unit_system")),
    ),
    run=run,
    note="taskyard only (the peers have no watcher stream); refusals by name in agents.refused; "
    "events are coalesced to the API's progress rate per task, so delivered <= sent; the headline figures are "
    "the lock-step phase (every task on one beat), `staggered` the same load on independent beats",
)
