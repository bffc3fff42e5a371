"""Driver side of the streaming and watcher modes: streaming agents and watcher sockets in their own
processes (`bench.ty.streamer`, `bench.ty.watchers`), tasks that stream, and what both sides saw.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from bench.children import Child, start_all
from bench.stats import summarize_ms
from bench.ty.stack import REPO_ROOT
from bench.ty.system import wait_for

if TYPE_CHECKING:
    from bench.ty.rest import RestClient
    from bench.ty.system import TySystem

STREAM_CAPABILITY = "bench.stream"
STREAM_TYPE = "bench.stream"


def _child(ty: TySystem, name: str, module: str, params: dict[str, Any], env: dict[str, str]) -> Child:
    child = Child(
        name,
        ty.child_argv(module, "--url", ty.stack.ws_url, "--params", json.dumps(params)),
        env=ty.child_env(**env),
        cwd=REPO_ROOT,
        log_path=ty.log_dir / f"{name}.log",
    )
    ty.children.append(child)
    return child


async def start_agents(ty: TySystem, count: int, slots: int, *, public: bool, batch: bool = False) -> list[Child]:
    """`count` streaming agents (capability `bench.stream`), `slots` tasks at once in all; once online.
    `batch`: they send what a loop turn produced as one `batch` frame (as taskyard's worker does)."""
    per_agent = math.ceil(slots / count)
    agents = [
        await ty.rest.create_agent(
            f"bench-stream-{i}", concurrency=per_agent, capabilities=[STREAM_CAPABILITY], public=public
        )
        for i in range(count)
    ]
    children = [
        _child(
            ty,
            f"streamer-{i}",
            "bench.ty.streamer",
            {"capacity": per_agent, "batch": batch},
            {
                "BENCH_AGENT_ID": agent_id,
                "BENCH_AGENT_TOKEN": token,
            },
        )
        for i, (agent_id, token) in enumerate(agents)
    ]
    await start_all(children, ready_timeout_s=60)

    async def online() -> bool:
        return all([await ty.rest.agent_online(agent_id) for agent_id, _ in agents])

    await wait_for(online, timeout_s=30, what="the streaming agents to be online")
    return children


async def start_watchers(ty: TySystem, sockets: int, procs: int, token: str) -> list[Child]:
    """`sockets` watcher sockets spread over `procs` processes, every one subscribed before this returns."""
    procs = max(1, min(procs, sockets))
    shares = [sockets // procs + (1 if i < sockets % procs else 0) for i in range(procs)]
    children = [
        _child(ty, f"watchers-{i}", "bench.ty.watchers", {"sockets": share}, {"BENCH_TOKEN": token})
        for i, share in enumerate(shares)
    ]
    await start_all(children, ready_timeout_s=120 + sockets / 10)
    return children


async def stream_tasks(rest: RestClient, count: int, *, events: int, rate: float, stagger: bool = False) -> list[str]:
    """Submit `count` streaming tasks (batches of 500); each streams `events` progress at `rate`/s.
    `stagger`: each task's beat starts at its own random point of one interval (`bench.ty.streamer`)."""
    spec: dict[str, Any] = {"events": events, "rate": rate}
    if stagger:
        spec["stagger"] = True
    ids: list[str] = []
    for offset in range(0, count, 500):
        size = min(500, count - offset)
        ids += await rest.submit_batch(size, capabilities=[STREAM_CAPABILITY], type_=STREAM_TYPE, input_=spec)
    return ids


async def reports(children: list[Child], timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Every child's `result` for what it saw since its last report."""
    await asyncio.gather(*(child.send("report") for child in children))
    answers = await asyncio.gather(*(child.message("result", timeout_s) for child in children))
    return [answer["result"] for answer in answers]


def agent_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The streaming agents' side: progress sent, refusals by name, ack times of accepts and results."""
    errors: dict[str, int] = {}
    for part in parts:
        for name, n in part["errors"].items():
            errors[name] = errors.get(name, 0) + n
    return {
        "tasks": sum(p["tasks_seen"] for p in parts),
        "finished": sum(p["finished"] for p in parts),
        "unacked_results": sum(p["unacked_results"] for p in parts),
        "cancels": sum(p["cancels"] for p in parts),
        "progress_sent": sum(p["progress_sent"] for p in parts),
        "refused": errors,
        "refused_total": sum(errors.values()),
        "accept_ack_ms": summarize_ms([s for p in parts for s in p["ack_s"]["task/accept"]]),
        "result_ack_ms": summarize_ms([s for p in parts for s in p["ack_s"]["task/result"]]),
    }


def watcher_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The watchers' side: events, completeness and order, agent -> watcher latency of progress events."""
    firsts = [p["first_progress_at"] for p in parts if p["first_progress_at"] is not None]
    lasts = [p["last_progress_at"] for p in parts if p["last_progress_at"] is not None]
    progress = sum(p["progress"] for p in parts)
    span = max(lasts) - min(firsts) if firsts and lasts else 0.0
    closed = [c for p in parts for c in p["closed"]]
    return {
        "sockets": sum(p["sockets"] for p in parts),
        "tasks_seen": max((p["tasks"] for p in parts), default=0),
        "events": sum(p["events"] for p in parts),
        "frames": sum(p.get("frames", 0) for p in parts),
        "progress": progress,
        "progress_per_s": round(progress / span, 1) if span > 0 else None,
        "missing": sum(p["missing"] for p in parts),
        "gaps": sum(p["gaps"] for p in parts),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "incomplete_socket_tasks": sum(p["incomplete_socket_tasks"] for p in parts),
        "agent_to_watcher_ms": summarize_ms([us / 1e6 for p in parts for us in p["latencies_us"]]),
        "sockets_closed_early": len(closed),
        "closed_reasons": sorted(set(closed))[:5],
    }
