"""Single submits, sequential or from concurrent clients (shared by `submit_seq` and `submit_concurrent`).

taskyard: `POST /api/tasks` from client processes (`bench.ty.submitter`), each with its share of the
clients; the window closes when PostgreSQL holds every task as done (so the cost is end to end).
Peers: their enqueue call (`send()`, `kiq()`, `delay()`, `enqueue()`), then every result waited for.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from bench.children import Child, go_all, start_all, stop_all
from bench.cpu import cpu_by_pid, group_pids
from bench.figures import merge_submits, submit_figures
from bench.modes import TASKYARD
from bench.peers.driver import peer_action
from bench.ty.pgview import DoneCounter
from bench.ty.stack import REPO_ROOT
from bench.ty.system import describe, setup_text, taskyard_system

if TYPE_CHECKING:
    from pathlib import Path

    from bench.modes import RunContext
    from bench.ty.system import TySystem

CLIENT_WARMUP = 2


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _refused(results: list[dict[str, Any]]) -> dict[str, int]:
    """Submits the API refused, by HTTP status, over every submitter process."""
    out: dict[str, int] = {}
    for result in results:
        for status, n in result.get("refused", {}).items():
            out[status] = out.get(status, 0) + n
    return out


def submitters(ty: TySystem, action: str, params: list[dict[str, Any]], http_client: str) -> list[Child]:
    """Client processes of the project's venv running `bench.ty.submitter` (token in the environment)."""
    children = []
    for i, p in enumerate(params):
        argv = ty.child_argv(
            "bench.ty.submitter", "--base-url", ty.stack.base_url, "--action", action, "--http-client", http_client
        )
        child = Child(
            f"submitter-{i}",
            [*argv, "--params", json.dumps(p)],
            env=ty.child_env(BENCH_TOKEN=ty.rest.access_token),
            cwd=REPO_ROOT,
            log_path=ty.log_dir / f"submitter-{i}.log",
        )
        children.append(child)
    ty.children.extend(children)
    return children


def submitter_cpu_s(children: list[Child]) -> float:
    """CPU seconds the submitter processes (and anything they forked) have used so far."""
    return sum(cpu_by_pid([pid for child in children for pid in group_pids(child.pid)]).values())


def client_figures(children: list[Child], cpu_before_s: float, submits: int, http_client: str) -> dict[str, Any]:
    """The load generator's own cost over the submitting window: its CPU per submit (the `client` cost role
    also holds the driver and, in open_loop, the watcher)."""
    used_s = submitter_cpu_s(children) - cpu_before_s
    return {"http_client": http_client, "cpu_ms_per_submit": round(used_s * 1000 / max(1, submits), 3)}


async def _taskyard(ctx: RunContext, log_dir: Path, n: int, clients: int, procs: int) -> dict[str, Any]:
    a = ctx.args
    async with taskyard_system(ctx, log_dir, workers=a.workers, concurrency=a.concurrency) as ty:
        params = [
            {"n": count, "clients": share, "warmup": CLIENT_WARMUP}
            for count, share in zip(_shares(n, procs), _shares(clients, procs), strict=True)
        ]
        children = submitters(ty, "submits", params, a.http_client)
        readies = await start_all(children, ready_timeout_s=60)
        async with DoneCounter(ty.db) as done:
            await done.wait_for(sum(r["warm"] for r in readies), timeout_s=60)
            base = await done.count()
            before = await ty.meter.open_window()
            client_cpu_s = submitter_cpu_s(children)
            results = await go_all(children, timeout_s=a.timeout_s)
            client = client_figures(children, client_cpu_s, n, a.http_client)
            refused = _refused(results)
            accepted = n - sum(refused.values())
            drained = await done.wait_for(base + accepted, timeout_s=a.timeout_s)
            cost = await ty.meter.close_window(before, units=max(1, accepted), unit="task")
        await stop_all(children)
        raw = merge_submits(results)
        raw["drained"] = drained
        raw["answers"] = [[t0, t1] for t0, t1, _ in raw["answers"]]
        result = {
            **submit_figures(raw),
            "refused": refused,
            "client": client,
            "setup": setup_text(ctx, a.workers, a.concurrency)
            + f"; {clients} client(s) in {procs} process(es), one POST /api/tasks at a time each"
            + f" ({a.http_client} HTTP client)",
            "cost": cost,
        }
        return describe(result, ty)


async def run_single_submits(
    ctx: RunContext, system: str, log_dir: Path, *, n: int, clients: int, procs: int
) -> dict[str, Any]:
    procs = max(1, min(procs, clients))
    if system == TASKYARD:
        return await _taskyard(ctx, log_dir, n, clients, procs)
    params = [
        {
            "n": count,
            "clients": share,
            "warmup": ctx.args.warmup if i == 0 else CLIENT_WARMUP,
            "timeout_s": ctx.args.timeout_s,
        }
        for i, (count, share) in enumerate(zip(_shares(n, procs), _shares(clients, procs), strict=True))
    ]
    out = await peer_action(
        ctx, system, log_dir, "submits", params, units=n, unit="task", timeout_s=ctx.args.timeout_s * 2 + 60
    )
    return {
        **submit_figures(merge_submits(out["results"])),
        "setup": out["setup"] + f"; {clients} client(s) in {procs} process(es), one submit at a time each",
        "versions": out["versions"],
        "cost": out["cost"],
    }
