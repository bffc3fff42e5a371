"""Watchers: W sockets of one (non-admin) user watch all of that user's T tasks x E progress events;
every socket must get every event of every task, in `seq` order. Fan-out latency is agent -> watcher
of the progress events; the agent's ack times show whether acks wait behind the fan-out.
taskyard only: the peers have no watcher stream.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from bench.cpu import rss_mib
from bench.modes import TASKYARD, Metric, Mode
from bench.ty.pgview import ENDED, DoneCounter
from bench.ty.rest import RestClient
from bench.ty.stages import status_counts
from bench.ty.streams import agent_figures, reports, start_agents, start_watchers, stream_tasks, watcher_figures
from bench.ty.system import describe, taskyard_system

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext

EVENT_RATE = 10.0
"""Progress events per second per task: under the API's default progress rate, so none is coalesced."""


async def run(ctx: RunContext, system: str, log_dir: Path) -> dict[str, Any]:
    a = ctx.args
    async with taskyard_system(ctx, log_dir, workers=0, concurrency=0) as ty, DoneCounter(ty.db, ENDED) as done:
        user = RestClient(ty.stack.base_url)
        try:
            email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(18)
            await user.register(email, password)
            await user.login(email, password)
            agents = await start_agents(ty, 1, a.watch_tasks, public=True)
            rss_before = rss_mib(ty.stack.pids("api"))
            watch = await start_watchers(ty, a.watchers, a.watcher_procs, user.access_token)
            rss_connected = rss_mib(ty.stack.pids("api"))
            before = await ty.meter.open_window()
            await stream_tasks(user, a.watch_tasks, events=a.watch_events, rate=EVENT_RATE)
            await done.wait_for(a.watch_tasks, timeout_s=a.timeout_s)
            await ty.meter.wait_quiet()
            seen = watcher_figures(await reports(watch))
            sent = agent_figures(await reports(agents))
            cost = await ty.meter.close_window(before, units=max(1, seen["events"]), unit="event delivered")
            statuses = await status_counts(user)
        finally:
            await user.aclose()
        result = {
            "watcher": seen,
            "agents": sent,
            "statuses": statuses,
            "expected_events": seen["events"] + seen["missing"],
            "api_rss_mib": {"before": rss_before, "watchers_connected": rss_connected},
            "api_rss_kib_per_watcher": round((rss_connected - rss_before) * 1024 / max(1, a.watchers), 1),
            "setup": f"{a.watchers} watcher sockets of one user in {a.watcher_procs} process(es), all subscribed to "
            f"all of the user's tasks; {a.watch_tasks} tasks x {a.watch_events} progress events at {EVENT_RATE:g}/s "
            "from one public streaming agent",
            "cost": cost,
        }
        return describe(result, ty)


MODE = Mode(
    name="watchers",
    title="many watchers of one user's streaming tasks",
    systems=(TASKYARD,),
    metrics=(
        Metric("events delivered", ("watcher", "events"), higher_is_better=True),
        Metric("missing", ("watcher", "missing")),
        Metric("out of order", ("watcher", "out_of_order")),
        Metric("fan-out p50 ms", ("watcher", "agent_to_watcher_ms", "p50")),
        Metric("fan-out p99 ms", ("watcher", "agent_to_watcher_ms", "p99")),
        Metric("result ack p99 ms", ("agents", "result_ack_ms", "p99")),
        Metric("API RSS KiB/watcher", ("api_rss_kib_per_watcher",)),
        Metric("CPU ms/event (system)", ("cost", "cpu_ms_per_unit_system")),
    ),
    run=run,
    note="taskyard only; fan-out = agent sends a progress event -> a watcher socket has it",
)
