"""The no-op workload on taskyard: warm-up, batch throughput, sequential latency, dispatch latency.

Throughput counts from the first batch request to the moment PostgreSQL holds every task as `done`
(the recorder's write), and also reports when the last `done` event reached the watching client.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from bench.stats import latency_fields, median_run, summarize_ms, throughput
from bench.ty.rest import RestClient
from bench.ty.ws import ProbeAgent, Watcher

if TYPE_CHECKING:
    from bench.ty.stack import TaskyardStack

PROBE_CAPABILITY = "bench.probe"


@dataclass(frozen=True)
class Workload:
    n: int
    seq: int
    batch: int
    warmup: int
    workers: int
    concurrency: int
    submit_concurrency: int
    timeout_s: float
    repeat: int = 1


async def _wait_for(check: Any, *, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def _count_done(pg: psycopg.AsyncConnection[Any]) -> int:
    row = await (await pg.execute("SELECT count(*) FROM tasks WHERE status = 'done'")).fetchone()
    return int(row[0]) if row else 0


async def _pg_done_at(pg_url: str, target: int, timeout_s: float) -> float:
    """The perf_counter time PostgreSQL first held `target` done tasks (polled every 20 ms)."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
        deadline = time.monotonic() + timeout_s
        while await _count_done(pg) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL holds {await _count_done(pg)} of {target} done tasks")
            await asyncio.sleep(0.02)
        return time.perf_counter()


async def _retried(pg_url: str, task_ids: list[str]) -> int:
    """How many of these tasks needed more than one attempt (a no-op never should)."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
        cur = await pg.execute("SELECT count(*) FROM tasks WHERE attempt > 1 AND id = ANY(%s)", (task_ids,))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _statuses(pg_url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
        rows = await (await pg.execute("SELECT status, count(*) FROM tasks GROUP BY status")).fetchall()
    return {str(status): int(count) for status, count in rows}


STAGES = (("queued", "assigned"), ("assigned", "running"), ("running", "done"), ("queued", "done"))


async def _stage_breakdown(pg_url: str, task_ids: list[str]) -> dict[str, Any]:
    """Where the time went, from the recorded `task/status` event times (the scripts' clock), per stage."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
        cur = await pg.execute(
            "SELECT task_id, status, at FROM task_events WHERE type = 'task/status' AND task_id = ANY(%s)",
            (task_ids,),
        )
        rows = await cur.fetchall()
    times: dict[str, dict[str, float]] = {}
    for task_id, status, at in rows:
        # The first time a task reached a status (a retried task reaches some twice).
        times.setdefault(task_id, {}).setdefault(status, at.timestamp())
    out: dict[str, Any] = {}
    for a, b in STAGES:
        out[f"{a}->{b}_ms"] = summarize_ms([t[b] - t[a] for t in times.values() if a in t and b in t])
    firsts = [t["queued"] for t in times.values() if "queued" in t]
    lasts = [t["done"] for t in times.values() if "done" in t]
    if firsts and lasts:
        out["first_queued_to_last_done_s"] = round(max(lasts) - min(firsts), 3)
    return out


async def _start_agents(stack: TaskyardStack, rest: RestClient, work: Workload) -> None:
    agents = [
        await rest.create_agent(f"bench-worker-{i}", concurrency=work.concurrency, capabilities=[])
        for i in range(work.workers)
    ]
    for index, (agent_id, token) in enumerate(agents):
        stack.start_worker(index, agent_id, token, work.concurrency)

    async def all_online() -> bool:
        stack.check_alive()
        return all([await rest.agent_online(agent_id) for agent_id, _ in agents])

    await _wait_for(all_online, timeout_s=60, what="every worker to be online")


async def _throughput(rest: RestClient, watcher: Watcher, pg_url: str, work: Workload) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
        done_before = await _count_done(pg)
    pg_done = asyncio.create_task(_pg_done_at(pg_url, done_before + work.n, work.timeout_s))
    gate = asyncio.Semaphore(work.submit_concurrency)

    async def submit(count: int) -> list[str]:
        async with gate:
            return await rest.submit_batch(count)

    started = time.perf_counter()
    sizes = [min(work.batch, work.n - offset) for offset in range(0, work.n, work.batch)]
    try:
        batches = await asyncio.gather(*(submit(size) for size in sizes))
        submitted = time.perf_counter()
        ids = [task_id for batch in batches for task_id in batch]
        watcher.track(ids)
        await watcher.wait_tracked(work.timeout_s)
        events_done = time.perf_counter()
        recorded = await pg_done
    finally:
        pg_done.cancel()
    history = await _wait_events_recorded(pg_url, ids, timeout_s=work.timeout_s)
    not_done = sum(1 for task_id in ids if watcher.ended_status.get(task_id) != "done")
    return {
        **throughput(work.n, recorded - started),
        "measured_to": "every task done in PostgreSQL",
        "submit_seconds": round(submitted - started, 3),
        "events_seconds": round(events_done - started, 3),
        "events_tasks_per_s": round(work.n / (events_done - started), 1),
        "not_done": not_done,
        "retried": await _retried(pg_url, ids),
        "history_recorded_seconds": None if history is None else round(history - started, 3),
        "stages": await _stage_breakdown(pg_url, ids),
    }


async def _sequential(rest: RestClient, watcher: Watcher, work: Workload) -> list[float]:
    samples = []
    for _ in range(work.seq):
        started = time.perf_counter()
        task_id = await rest.submit_one()
        ended = await watcher.wait_ended(task_id, timeout_s=30)
        if watcher.ended_status[task_id] != "done":
            raise RuntimeError(f"task {task_id} ended {watcher.ended_status[task_id]}")
        samples.append(ended - started)
    return samples


async def _wait_events_recorded(pg_url: str, task_ids: list[str], timeout_s: float) -> float | None:
    """perf_counter time every task's `done` event row is in `task_events`, or None after `timeout_s`.

    The result row and the event history are written by different paths (the result on the agent's
    frame, the history by the recorder), so the history may trail the `done` status.
    """
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
        deadline = time.monotonic() + timeout_s
        while True:
            cur = await pg.execute(
                "SELECT count(*) FROM task_events WHERE type = 'task/status' AND status = 'done' AND task_id = ANY(%s)",
                (task_ids,),
            )
            row = await cur.fetchone()
            if row and int(row[0]) >= len(task_ids):
                return time.perf_counter()
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)


async def _wait_recorded(pg_url: str, task_ids: list[str], timeout_s: float) -> None:
    """Wait until PostgreSQL holds every one of these tasks as done (the recorder may lag a little)."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:

        async def all_done() -> bool:
            cur = await pg.execute("SELECT count(*) FROM tasks WHERE status = 'done' AND id = ANY(%s)", (task_ids,))
            row = await cur.fetchone()
            return bool(row) and int(row[0]) == len(task_ids)

        await _wait_for(all_done, timeout_s=timeout_s, what="the recorder to write the probe tasks", interval_s=0.05)


async def _probe_sequential(
    stack: TaskyardStack, rest: RestClient, watcher: Watcher, pg_url: str, work: Workload
) -> dict[str, Any]:
    """Sequential tasks only the probe agent can take; times on this process' one clock."""
    agent_id, token = await rest.create_agent("bench-probe", concurrency=1, capabilities=[PROBE_CAPABILITY])
    probe = ProbeAgent(stack.ws_url, agent_id, token)
    await probe.start()
    try:
        await _wait_for(lambda: rest.agent_online(agent_id), timeout_s=30, what="the probe agent to be online")
        e2e: list[float] = []
        dispatch: list[float] = []
        submit_to_receive: list[float] = []
        task_ids: list[str] = []
        for _ in range(work.seq):
            started = time.perf_counter()
            task_id = await rest.submit_one(capabilities=[PROBE_CAPABILITY])
            task_ids.append(task_id)
            answered = time.perf_counter()
            received = await probe.wait_received(task_id, timeout_s=30)
            ended = await watcher.wait_ended(task_id, timeout_s=30)
            e2e.append(ended - started)
            dispatch.append(received - answered)
            submit_to_receive.append(received - started)
        if probe.errors:
            raise RuntimeError(f"probe agent got error frames: {probe.errors[:3]}")
        fields = latency_fields(e2e, dispatch, submit_to_receive)
    finally:
        await probe.close()
    # The same tasks seen from the status events' own times (the scripts' clock): queued->assigned is
    # the scheduler's pick-up on an idle system, assigned->running the inbox -> agent -> accept path.
    await _wait_recorded(pg_url, task_ids, timeout_s=30)
    await _wait_events_recorded(pg_url, task_ids, timeout_s=30)
    fields["stages"] = await _stage_breakdown(pg_url, task_ids)
    return fields


async def run_workload(stack: TaskyardStack, pg_url: str, work: Workload) -> dict[str, Any]:
    """Run every phase on a started stack (API and scheduler up); returns the result dict."""
    rest = RestClient(stack.base_url)
    try:
        await rest.login(stack.config.admin_email, stack.config.admin_password)
        await _start_agents(stack, rest, work)
        watcher = Watcher(stack.ws_url, rest.access_token)
        await watcher.start()
        try:
            warm = await rest.submit_batch(work.warmup)
            watcher.track(warm)
            await watcher.wait_tracked(60)
            runs = [await _throughput(rest, watcher, pg_url, work) for _ in range(work.repeat)]
            result: dict[str, Any] = {"throughput": median_run(runs)}
            stack.check_alive()
            result["latency_e2e_ms"] = summarize_ms(await _sequential(rest, watcher, work))
            probe = await _probe_sequential(stack, rest, watcher, pg_url, work)
            result["latency_dispatch_ms"] = probe["latency_dispatch_ms"]
            result["latency_submit_to_receive_ms"] = probe["latency_submit_to_receive_ms"]
            result["latency_e2e_probe_ms"] = probe["latency_e2e_ms"]
            result["dispatch_stages"] = probe["stages"]
            result["db_statuses"] = await _statuses(pg_url)
        finally:
            await watcher.close()
    finally:
        await rest.aclose()
    return result
