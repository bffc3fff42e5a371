"""Redis commands per task on the hot path, counted (never timed) on a Redis server of the test's own, so
nothing else running on the machine's shared Redis shows in `INFO commandstats`.

The path: a batch enqueued in one call, dispatched to one agent, every result completed at once (as a worker's
`batch` frame of results arrives), the submits read and acked. Nobody watches, so nothing is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from scheduler.client import SchedulerClient
from scheduler.clock import FakeClock
from scheduler.presence import mark_watching
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from scheduler.types import AgentSpec, TaskEvent, TaskSpec
from tests.integration.scheduler.conftest import spec

pytestmark = pytest.mark.redis

TASKS = 100
MAX_COMMANDS_PER_TASK = 15
"""Inside scripts and out (13.3 when written; ~64 end to end before the hot-path work)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def private_redis() -> AsyncIterator[redis.asyncio.Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.asyncio.Redis(port=port, socket_timeout=10)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                await client.ping()
                break
            except (redis.exceptions.ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        yield client
    finally:
        await client.aclose()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


async def _commands(client: redis.asyncio.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # `info` itself and the config/reset noise are not the path's.
    skip = {"info", "config|resetstat", "config"}
    return {k: after[k] - before.get(k, 0) for k in after if k not in skip and after[k] != before.get(k, 0)}


async def _cycle(client: redis.asyncio.Redis, prefix: str) -> dict[str, int]:
    clock = FakeClock()
    settings = SchedulerSettings(prefix=prefix, dispatch_batch=TASKS, task_ttl_s=600, inbox_ttl_s=600)
    sched = SchedulerClient(client, prefix=prefix, clock=clock, settings=settings)
    service = SchedulerService(client, settings, clock)
    agent = AgentSpec("a1", "owner-1", (), TASKS, True)
    await sched.agent_online(agent, lease_s=600)

    async def run(specs: list[TaskSpec]) -> list[TaskEvent]:
        assert await sched.enqueue_many(specs) == len(specs)
        assert await service.dispatch_once() == len(specs)
        entries = await sched.read_inbox("a1", "c1", block_ms=0, count=1000)
        await sched.ack_inbox("a1", [e.entry_id for e in entries])
        applied = await asyncio.gather(*(sched.complete(e.task_id, e.attempt, "a1") for e in entries))
        assert {a.status for a in applied} == {"done"}
        events = await sched.read_events("rec", block_ms=0, count=10_000)
        await sched.ack_events([e.entry_id for e in events])
        return events

    await run([spec("warm-up")])  # loads the scripts and reads presence: once per process, not per task
    before = await _commands(client)
    events = await run([spec(f"t{i}") for i in range(TASKS)])
    delta = _delta(before, await _commands(client))
    # The implied accept recorded `running`: four statuses per task, each in the history; all but the first
    # (which the row holds from the INSERT) in the recorder's stream.
    assert len(events) == 3 * TASKS
    assert [e.seq for e in events if e.task_id == "t0"] == [2, 3, 4]
    return delta


async def test_commands_per_task_on_the_batch_path(private_redis: redis.asyncio.Redis) -> None:
    delta = await _cycle(private_redis, "cc")
    per_task = sum(delta.values()) / TASKS
    assert per_task <= MAX_COMMANDS_PER_TASK, (per_task, delta)
    # One script call each for the enqueue, the dispatch and all the completes (coalesced in one loop turn).
    assert delta.get("evalsha", 0) + delta.get("eval", 0) == 3, delta
    # No per-task EXPIRE/HINCRBY where a batch or a container's TTL does, and no publish with nobody watching:
    # the finished-task counter `/metrics` reads is one HINCRBY for the whole complete call.
    assert delta.get("hincrby", 0) == 1, delta
    assert delta.get("expire", 0) == TASKS, delta  # the task hash (its status history inside), once, at the end
    assert delta.get("publish", 0) == 0, delta
    # Per task: its inbox entry and two stream entries (assigned; done, which carries the `running` its result
    # implied: the reader makes it two events, as checked above; not the first status).
    assert delta.get("xadd", 0) == 3 * TASKS, delta
    # Presence stays in memory between passes: one GET of its version, no re-read of the agents (their
    # lease index is read only by the scripts' once-per-call `watching` check, here three calls).
    assert delta.get("get", 0) == 1, delta
    assert delta.get("zrangebyscore", 0) == 3, delta


async def test_events_are_published_only_while_someone_watches(private_redis: redis.asyncio.Redis) -> None:
    keys = SchedulerClient(private_redis, prefix="w").keys
    await mark_watching(private_redis, keys, "api-1", FakeClock().now_ms(), 60_000)
    delta = await _cycle(private_redis, "w")
    assert delta.get("publish", 0) == 4 * TASKS, delta


LONE_TASKS = 20
MAX_DISPATCH_COMMANDS_PER_LONE_TASK = 20
"""A lone task's dispatch pass, inside its script and out (20 when written; 28 before)."""


async def test_a_lone_task_dispatch_checks_one_agent_and_reads_no_holds(private_redis: redis.asyncio.Redis) -> None:
    """One task at a time (nothing batches): each pass is one registry read and one script call, the script
    checks only the candidate it needs, and the tasks still spread over both agents (the pass counts what it
    placed while it trusts its presence snapshot)."""
    clock = FakeClock()
    settings = SchedulerSettings(prefix="lone", task_ttl_s=600, inbox_ttl_s=600)
    sched = SchedulerClient(private_redis, prefix="lone", clock=clock, settings=settings)
    service = SchedulerService(private_redis, settings, clock)
    for agent_id in ("a1", "a2"):
        await sched.agent_online(AgentSpec(agent_id, "owner-1", (), LONE_TASKS, True), lease_s=600)
    assert await sched.enqueue(spec("warm-up"))
    assert await service.dispatch_once() == 1  # loads the scripts, reads presence and the route once
    per_pass: list[dict[str, int]] = []
    for i in range(LONE_TASKS):
        await private_redis.delete(sched.keys.wake())  # as the dispatch loop's BLPOP leaves it
        before = await _commands(private_redis)
        assert await sched.enqueue(spec(f"lone-{i}"))
        enqueued = _delta(before, await _commands(private_redis))
        assert enqueued.get("lpush", 0) == 1, enqueued  # the wake: one element, no TTL to refresh
        assert "expire" not in enqueued, enqueued
        before = await _commands(private_redis)
        assert await service.dispatch_once() == 1
        per_pass.append(_delta(before, await _commands(private_redis)))
    for delta in per_pass:
        assert sum(delta.values()) <= MAX_DISPATCH_COMMANDS_PER_LONE_TASK, delta
        assert delta.get("evalsha", 0) == 1, delta
        assert delta.get("zscore", 0) == 1, delta  # one candidate re-checked, not both
        assert "smembers" not in delta, delta  # no operator hold exists: the sets are not read
        assert "hget" not in delta, delta  # the route info is kept
    inboxes = [await sched.read_inbox(a, "c1", block_ms=0, count=100) for a in ("a1", "a2")]
    assert sorted(len(entries) for entries in inboxes) == [LONE_TASKS // 2, LONE_TASKS // 2 + 1]
