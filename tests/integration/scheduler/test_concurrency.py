"""Several schedulers at once over the same Redis: each task is dispatched exactly once and no
agent ever holds more than its concurrency. Real loops, real clock; waits are on conditions."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from scheduler.client import SchedulerClient
from scheduler.service import SchedulerService
from scheduler.types import AgentSpec
from tests.integration.scheduler.conftest import spec

TASKS = 2000
AGENTS = {f"agent-{i}": 8 + i for i in range(6)}


async def _agent(
    sched: SchedulerClient, agent_id: str, submits: Counter[tuple[str, int]], done: set[str], stop: asyncio.Event
) -> None:
    # Ends on `stop`, never by cancellation: cancelling a task inside a redis-py 8.1 command can
    # leave the connection pool's lock waiter stuck (seen on Python 3.11.7), hanging teardown.
    while not stop.is_set():
        entries = await sched.read_inbox(agent_id, "api-1", block_ms=50, count=100)
        for e in entries:
            if e.kind != "submit":
                continue
            submits[(e.task_id, e.attempt)] += 1
            await sched.accept(e.task_id, e.attempt, agent_id)
        await sched.ack_inbox(agent_id, [e.entry_id for e in entries])
        for e in entries:
            if e.kind == "submit" and (await sched.complete(e.task_id, e.attempt, agent_id)).outcome == "ok":
                done.add(e.task_id)


async def test_two_schedulers_dispatch_each_task_exactly_once(redis_client, sched_settings) -> None:
    settings = dataclasses.replace(sched_settings, assign_timeout_s=60.0, dispatch_batch=25)
    sched = SchedulerClient(redis_client, prefix=settings.prefix, settings=settings)
    services = [SchedulerService(redis_client, dataclasses.replace(settings, instance=f"s{i}")) for i in range(2)]
    for agent_id, conc in AGENTS.items():
        await sched.agent_online(AgentSpec(agent_id, "owner-1", (), conc), lease_s=120)
    submits: Counter[tuple[str, int]] = Counter()
    done: set[str] = set()
    for s in services:
        await s.start()
    stop = asyncio.Event()
    drivers = [asyncio.create_task(_agent(sched, a, submits, done, stop)) for a in AGENTS]
    try:
        await sched.enqueue_many([spec(f"t{i:04d}", priority=i % 10) for i in range(TASKS)])
        overbooked: list[tuple[str, int]] = []
        async with asyncio.timeout(40):
            while len(done) < TASKS:
                overbooked += [
                    (p.agent_id, p.running) for p in await sched.online_agents() if p.running > AGENTS[p.agent_id]
                ]
                for d in drivers:
                    if d.done():
                        d.result()  # a driver that died raises here, not as a timeout later
                await asyncio.sleep(0.02)
        assert overbooked == []
    finally:
        stop.set()
        await asyncio.gather(*drivers, return_exceptions=True)
        for s in services:
            await s.stop()
    repeated = {key: n for key, n in submits.items() if n != 1 or key[1] != 1}
    assert repeated == {}
    assert len(submits) == TASKS
    assert sum(s.dispatched for s in services) == TASKS
    assert all(p.running == 0 for p in await sched.online_agents())
    assert sum((await sched.queue_depths()).values()) == 0
