"""Agent loss, timeouts and timers, with the injected clock (no waiting)."""

from __future__ import annotations

import asyncio
import json

from scheduler.client import SchedulerClient
from scheduler.clock import FakeClock
from scheduler.service import SchedulerService
from scheduler.types import AgentSpec, Outcome
from tests.integration.scheduler.conftest import spec


async def test_expired_agent_tasks_requeued_and_dispatched_elsewhere(sched, service, make_agent, clock) -> None:
    a = make_agent("a", concurrency=3, lease_s=2)
    await a.online()
    for i in range(3):
        await sched.enqueue(spec(f"t{i}", max_attempts=3))
    await service.run_until_idle()
    first = await a.inbox()
    assert len(first) == 3
    for e in first[:2]:
        await sched.accept(e.task_id, e.attempt, "a")
    b = make_agent("b", concurrency=3, lease_s=600)
    await b.online()
    clock.advance(2_001)  # a's lease ran out; b's did not
    await service.run_until_idle()
    moved = await b.inbox()
    assert sorted(e.task_id for e in moved) == ["t0", "t1", "t2"]
    assert {e.attempt for e in moved} == {2}
    assert not await sched.is_online("a")
    assert [p.agent_id for p in await sched.online_agents()] == ["b"]
    # a comes back with a late result for attempt 1: fenced.
    assert (await sched.complete("t0", 1, "a")).outcome == Outcome.STALE_ATTEMPT
    # a's inbox tells it to stop what it was running.
    assert sorted(e.task_id for e in await a.inbox("cancel")) == ["t0", "t1", "t2"]
    statuses = [e.status for e in await sched.history("t0") if e.type == "task/status"]
    assert statuses == ["queued", "assigned", "running", "queued", "assigned"]
    lost = [e for e in await sched.history("t0") if e.status == "queued"][-1]
    assert lost.reason == "worker_lost"


async def test_heartbeats_keep_an_agent_alive(sched, service, make_agent, clock) -> None:
    a = make_agent("a", lease_s=2)
    await a.online()
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    (entry,) = await a.inbox()
    await sched.accept("t1", entry.attempt, "a")
    for _ in range(5):
        clock.advance(1_500)
        assert await a.online() is False  # already online
        await service.run_until_idle()
    assert await sched.is_online("a")
    assert (await sched.complete("t1", 1, "a")).outcome == Outcome.OK


async def test_lost_on_last_attempt_is_requeued_not_failed(sched, service, make_agent, clock) -> None:
    """A lost agent is not the task's fault: its only attempt is given back (see test_losses.py)."""
    a = make_agent("a", lease_s=1)
    await a.online()
    await sched.enqueue(spec("t", max_attempts=1))
    await service.run_until_idle()
    await a.inbox()
    clock.advance(1_001)
    await service.run_until_idle()
    final = (await sched.history("t"))[-1]
    assert (final.status, final.reason) == ("queued", "worker_lost")


async def test_agent_offline_requeues_at_once(sched, service, make_agent) -> None:
    a = make_agent("a", concurrency=2)
    await a.online()
    await sched.enqueue_many([spec("t1"), spec("t2")])
    await service.run_until_idle()
    assert len(await a.inbox()) == 2
    assert await sched.agent_offline("a", requeue_now=True) == 2
    assert not await sched.is_online("a")
    assert (await sched.queue_depths())[5] == 2
    b = make_agent("b", concurrency=2)
    await b.online()
    await service.run_until_idle()
    assert {(e.task_id, e.attempt) for e in await b.inbox()} == {("t1", 2), ("t2", 2)}


async def test_agent_offline_without_requeue_only_stops_new_work(sched, service, make_agent) -> None:
    a = make_agent("a", concurrency=2)
    await a.online()
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    await a.inbox()
    assert await sched.agent_offline("a", requeue_now=False) == 0
    await sched.enqueue(spec("t2"))
    await service.run_until_idle()
    assert await a.inbox() == []
    assert (await sched.accept("t1", 1, "a")).outcome == Outcome.OK


async def test_assign_timeout_requeues_and_cancels(sched, service, make_agent, clock: FakeClock) -> None:
    a = make_agent("a")
    await a.online()
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    await a.inbox()
    clock.advance(2_000)  # assign_timeout_s=2 in the test settings
    await service.run_until_idle()
    (cancel,) = await a.inbox("cancel")
    assert json.loads(cancel.payload_json)["reason"] == "timeout"
    # Requeued and (the agent being free again) dispatched anew as attempt 2.
    assert [e.attempt for e in a.received if e.kind == "submit"] == [1, 2]


async def test_run_timeout_retries_then_fails(sched, service, make_agent, clock: FakeClock) -> None:
    a = make_agent("a")
    await a.online()
    await sched.enqueue(spec("t1", timeout_s=3, max_attempts=2))
    await service.run_until_idle()
    (first,) = await a.inbox()
    await sched.accept("t1", first.attempt, "a")
    clock.advance(3_000)
    await service.run_until_idle()
    assert [e.task_id for e in await a.inbox("cancel")] == ["t1"]
    (presence,) = await sched.online_agents()
    assert presence.running == 0
    clock.advance(2_000)  # past any backoff (cap 2 s)
    await service.run_until_idle()
    (second,) = await a.inbox()
    assert second.attempt == 2
    await sched.accept("t1", 2, "a")
    clock.advance(3_000)
    await service.run_until_idle()
    final = (await sched.history("t1"))[-1]
    assert (final.status, final.reason, final.attempt) == ("failed", "timeout", 2)
    assert (await sched.complete("t1", 2, "a")).outcome == Outcome.TERMINAL


async def test_delayed_task_released_when_due(sched, service, make_agent, clock: FakeClock) -> None:
    a = make_agent("a")
    await a.online()
    two_hours = 2 * 3600 * 1000
    await sched.enqueue(spec("later", run_at_ms=clock.now_ms() + two_hours))
    assert [e.status for e in await sched.history("later")] == ["scheduled"]
    await service.run_until_idle()
    assert await a.inbox() == []
    clock.advance(two_hours - 1)
    await service.run_until_idle()
    assert await a.inbox() == []
    clock.advance(1)
    await a.online()
    await service.run_until_idle()
    assert [e.task_id for e in await a.inbox()] == ["later"]
    await service.run_until_idle()
    assert len([e for e in a.received if e.kind == "submit"]) == 1


async def test_run_at_in_the_past_queues_at_once(sched: SchedulerClient, clock: FakeClock) -> None:
    await sched.enqueue(spec("now", run_at_ms=clock.now_ms() - 1))
    assert [e.status for e in await sched.history("now")] == ["queued"]


async def test_started_service_dispatches_on_its_own(sched, make_agent, redis_client, sched_settings) -> None:
    """The real loops (system clock) dispatch without run_until_idle."""
    live = SchedulerService(redis_client, sched_settings)
    real = SchedulerClient(redis_client, prefix=sched_settings.prefix, settings=sched_settings)
    await real.agent_online(AgentSpec("a", "o", (), 1), lease_s=30)
    await live.start()
    try:
        await real.enqueue(spec("t1"))
        async with asyncio.timeout(10):
            while not (entries := await real.read_inbox("a", "c", block_ms=200, count=10)):
                pass
        assert entries[0].task_id == "t1"
    finally:
        await live.stop()


async def test_blocked_inbox_reader_survives_agent_removal(sched, make_agent) -> None:
    a = make_agent("a")
    await a.online()
    reader = asyncio.create_task(sched.read_inbox("a", "c", block_ms=3000, count=10))
    # Give the read a moment to block; if it has not yet, the test is only weaker, never flaky.
    await asyncio.sleep(0.1)
    await sched.agent_offline("a", requeue_now=True)
    async with asyncio.timeout(5):
        assert await reader == []


async def test_cancelling_blocked_inbox_reads_never_hangs(sched, make_agent) -> None:
    """Sessions cancel their reader when a socket closes; that must always finish promptly."""
    for i in range(4):
        await make_agent(f"a{i}").online()

    async def reader(agent_id: str) -> None:
        while True:
            await sched.read_inbox(agent_id, "c", block_ms=50, count=10)

    for round_no in range(60):
        readers = [asyncio.create_task(reader(f"a{i}")) for i in range(4)]
        await asyncio.sleep(0.01 + (round_no % 5) * 0.01)  # cancel at varying points of the read
        for r in readers:
            r.cancel()
        _done, pending = await asyncio.wait(readers, timeout=5)
        assert not pending, f"a cancelled read hung in round {round_no}"
