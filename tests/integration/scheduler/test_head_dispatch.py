"""A pass after a wake: the dispatch loop sends the dispatch of the registry's first queue right behind its BLPOP
(dispatch.lua's head mode), so a lone task costs the scheduler one round trip; whatever that call cannot decide
(presence moved on, an operator hold, other queues behind it, a server without the script) goes to an ordinary
pass in the same `dispatch_on_wake`.

Round trips are counted on the client's connections (one send per command or pipeline), never timed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.connection import Connection

from scheduler.client import SchedulerClient
from scheduler.clock import FakeClock, SystemClock
from scheduler.keys import route_id
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from scheduler.types import AgentSpec
from tests.integration.scheduler.conftest import FakeAgent, spec
from tests.integration.scheduler.test_command_count import _commands, _delta, private_redis  # noqa: F401  (a fixture)

pytestmark = pytest.mark.redis


class CountingConnection(Connection):
    """Counts what it sends: one per command, one per pipeline (each a round trip)."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


async def _counting_client(redis_url: str) -> redis.asyncio.Redis:
    pool = redis.asyncio.ConnectionPool.from_url(redis_url, connection_class=CountingConnection, socket_timeout=5)
    return redis.asyncio.Redis.from_pool(pool)  # owns the pool: closing the client closes its connections


@pytest.fixture
async def counting(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = await _counting_client(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _service(client: redis.asyncio.Redis, settings: SchedulerSettings, clock: Any) -> SchedulerService:
    return SchedulerService(client, settings, clock, blocking_redis=client)


async def test_a_lone_task_after_a_wake_costs_one_round_trip_and_spreads_over_the_agents(
    sched: SchedulerClient, sched_settings: SchedulerSettings, clock: FakeClock, make_agent, counting
) -> None:
    agents: list[FakeAgent] = [make_agent("a1", concurrency=10), make_agent("a2", concurrency=10)]
    for agent in agents:
        await agent.online()
    service = _service(counting, sched_settings, clock)
    await sched.enqueue(spec("warm-up"))
    assert await service.dispatch_once() == 1  # reads presence (and loads the script)
    for i in range(6):
        await sched.enqueue(spec(f"lone-{i}"))  # pushes the wake
        before = CountingConnection.sends
        assert await service.dispatch_on_wake() == 1
        assert CountingConnection.sends - before == 1  # the BLPOP and the dispatch behind it, nothing else
    got = [len(await agent.inbox()) for agent in agents]
    assert sorted(got) == [3, 4]  # least loaded first, by the placements the pass counted


async def test_the_head_dispatch_takes_the_time_from_the_server_with_a_real_clock(
    redis_client: redis.asyncio.Redis, sched_settings: SchedulerSettings, counting
) -> None:
    """The call waits behind the BLPOP: a time read before it would be stale, so the script reads the server's."""
    real = SystemClock()
    sched = SchedulerClient(redis_client, prefix=sched_settings.prefix, clock=real, settings=sched_settings)
    agent = FakeAgent(sched, "a1", concurrency=5)
    await agent.online()
    service = _service(counting, sched_settings, real)
    await sched.enqueue(spec("warm-up"))
    assert await service.dispatch_once() == 1
    await sched.enqueue(spec("later"))
    before_ms = real.now_ms()
    before = CountingConnection.sends
    assert await service.dispatch_on_wake() == 1
    after_ms = real.now_ms()
    assert CountingConnection.sends - before == 1
    deadline = await redis_client.zscore(sched.keys.deadlines(), "later")  # the assign-ack deadline: NOW + timeout
    ack_ms = int(sched_settings.assign_timeout_s * 1000)
    assert before_ms + ack_ms - 5 <= deadline <= after_ms + ack_ms + 5


async def test_an_agent_that_came_online_since_presence_was_read_is_seen(
    sched: SchedulerClient, sched_settings: SchedulerSettings, clock: FakeClock, make_agent, counting
) -> None:
    """The candidates come from presence in memory: when a heartbeat changed it, the head call declines and the
    ordinary pass reads presence again (else the task would wait for the only agent it knew, which is full)."""
    busy = make_agent("busy", concurrency=1)
    await busy.online()
    service = _service(counting, sched_settings, clock)
    await sched.enqueue(spec("fills-busy"))
    assert await service.dispatch_once() == 1
    fresh = make_agent("fresh", concurrency=1)
    await fresh.online()  # bumps the presence version and pushes a wake
    await sched.enqueue(spec("next"))
    assert await service.dispatch_on_wake() == 1
    assert [e.task_id for e in await fresh.inbox()] == ["next"]
    assert [e.task_id for e in await busy.inbox()] == ["fills-busy"]


async def test_a_drained_agent_gets_nothing_on_a_wake(
    sched: SchedulerClient,
    sched_settings: SchedulerSettings,
    clock: FakeClock,
    make_agent,
    counting,
    redis_client: redis.asyncio.Redis,
) -> None:
    idle = make_agent("idle", concurrency=5)  # least loaded: the head call would pick it
    other = make_agent("other", concurrency=5)
    await idle.online()
    await other.online()
    service = _service(counting, sched_settings, clock)
    await sched.enqueue(spec("warm-up", agent_id="other"))
    assert await service.dispatch_once() == 1
    await redis_client.sadd(sched.keys.drained_agents(), "idle")
    for i in range(3):
        await sched.enqueue(spec(f"t{i}"))
        assert await service.dispatch_on_wake() == 1
    assert await idle.inbox() == []
    assert [e.task_id for e in await other.inbox()] == ["warm-up", "t0", "t1", "t2"]


async def test_priority_order_holds_across_queues_on_a_wake(
    sched: SchedulerClient, sched_settings: SchedulerSettings, clock: FakeClock, make_agent, counting
) -> None:
    """The head call yields once its queue's head sorts after the next queue's; the ordinary pass does the rest."""
    agent = make_agent("a1", concurrency=10, caps=("gpu",))
    await agent.online()
    service = _service(counting, sched_settings, clock)
    await sched.enqueue(spec("warm-up"))
    assert await service.dispatch_once() == 1
    await sched.enqueue_many(
        [
            spec("plain-9", priority=9),
            spec("gpu-7", priority=7, caps=("gpu",)),
            spec("plain-5", priority=5),
            spec("gpu-3", priority=3, caps=("gpu",)),
        ]
    )
    assert await service.dispatch_on_wake() == 4
    assert [e.task_id for e in await agent.inbox()] == ["warm-up", "plain-9", "gpu-7", "plain-5", "gpu-3"]


async def test_a_server_without_the_script_gets_an_ordinary_pass(private_redis: redis.asyncio.Redis) -> None:  # noqa: F811
    """A flushed (or new) server answers the bare EVALSHA with NOSCRIPT: the ordinary pass loads the script."""
    clock = FakeClock()
    settings = SchedulerSettings(prefix="noscript", task_ttl_s=600, inbox_ttl_s=600)
    sched = SchedulerClient(private_redis, prefix="noscript", clock=clock, settings=settings)
    agent = FakeAgent(sched, "a1", concurrency=5)
    await agent.online()
    service = SchedulerService(private_redis, settings, clock)
    await sched.enqueue(spec("warm-up"))
    assert await service.dispatch_once() == 1
    await private_redis.script_flush()
    await sched.enqueue(spec("after-flush"))  # (its own script object loads enqueue.lua again)
    assert await service.dispatch_on_wake() == 1  # the same call: no error reached the loop's back-off
    assert [e.task_id for e in await agent.inbox()] == ["warm-up", "after-flush"]


async def test_a_paused_task_type_makes_the_head_call_decline_and_stays_queued(
    sched: SchedulerClient,
    sched_settings: SchedulerSettings,
    clock: FakeClock,
    make_agent,
    counting,
    redis_client: redis.asyncio.Redis,
) -> None:
    """A paused task type is an operator hold like the others: the head call, which does not check task types,
    declines, and the ordinary pass leaves that type's tasks queued while it dispatches the rest."""
    agent = make_agent("a1", concurrency=5)
    await agent.online()
    service = _service(counting, sched_settings, clock)
    await sched.enqueue(spec("warm-up"))
    assert await service.dispatch_once() == 1
    await redis_client.sadd(sched.keys.paused_types(), "held")
    await sched.enqueue(dataclasses.replace(spec("paused"), type="held"))
    await sched.enqueue(spec("free"))
    assert await service.dispatch_on_wake() == 1
    assert [e.task_id for e in await agent.inbox()] == ["warm-up", "free"]
    assert await redis_client.zcard(sched.keys.queue(route_id(None, ()))) == 1
    await redis_client.srem(sched.keys.paused_types(), "held")
    await redis_client.lpush(sched.keys.wake(), "1")  # as resuming a type wakes the dispatcher
    assert await service.dispatch_on_wake() == 1
    assert [e.task_id for e in await agent.inbox()][-1] == "paused"


async def test_the_head_call_of_a_lone_task_reads_no_hold_set(
    private_redis: redis.asyncio.Redis,  # noqa: F811  (the fixture imported above)
) -> None:
    """With no operator hold, the head call's one EXISTS covers every hold key: no SCARD of the paused task
    types, SCARD only for the one agent re-checked."""
    clock = FakeClock()
    settings = SchedulerSettings(prefix="head", task_ttl_s=600, inbox_ttl_s=600)
    sched = SchedulerClient(private_redis, prefix="head", clock=clock, settings=settings)
    service = SchedulerService(private_redis, settings, clock, blocking_redis=private_redis)
    for agent_id in ("a1", "a2"):
        await sched.agent_online(AgentSpec(agent_id, "owner-1", (), 10, True), lease_s=600)
    await sched.enqueue(spec("warm-up"))
    assert await service.dispatch_once() == 1  # loads the scripts, reads presence
    for i in range(5):
        await sched.enqueue(spec(f"lone-{i}"))  # pushes the wake
        before = await _commands(private_redis)
        assert await service.dispatch_on_wake() == 1
        delta = _delta(before, await _commands(private_redis))
        assert delta.get("evalsha", 0) == 1, delta  # the head call: no ordinary pass behind it
        assert delta.get("exists", 0) == 1, delta
        assert delta.get("scard", 0) == 1, delta
        assert "sismember" not in delta, delta
        assert "smembers" not in delta, delta
