"""Dispatch order, routing and slots, through the real scripts on a real Redis."""

from __future__ import annotations

import asyncio
import json

from scheduler.client import SchedulerClient
from scheduler.service import SchedulerService
from tests.integration.scheduler.conftest import spec


async def test_enqueue_is_idempotent(sched: SchedulerClient) -> None:
    s = spec("t1")
    assert await sched.enqueue(s) is True
    assert await sched.enqueue(s) is False
    assert await sched.enqueue_many([s, spec("t2"), spec("t3")]) == 2
    assert await sched.known_task_ids(["t1", "t2", "nope"]) == {"t1", "t2"}


async def test_priority_order_and_fifo_within_priority(sched, service: SchedulerService, make_agent) -> None:
    agent = make_agent("a1", concurrency=1)
    await agent.online()
    order = [("low-1", 1), ("high-1", 9), ("mid-1", 5), ("high-2", 9), ("low-2", 1), ("mid-2", 5)]
    for task_id, prio in order:
        await sched.enqueue(spec(task_id, priority=prio))
    got = []
    for _ in order:
        assert await service.run_until_idle() == 1
        (entry,) = await agent.inbox()
        got.append(entry.task_id)
        assert (await sched.complete(entry.task_id, entry.attempt, "a1")).outcome == "ok"
    assert got == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


async def test_order_holds_across_routing_classes(sched, service: SchedulerService, make_agent) -> None:
    agent = make_agent("a1", concurrency=1, caps=("gpu", "llm"))
    await agent.online()
    await sched.enqueue(spec("plain-5", priority=5))
    await sched.enqueue(spec("gpu-7", priority=7, caps=("gpu",)))
    await sched.enqueue(spec("llm-5", priority=5, caps=("llm",)))
    await sched.enqueue(spec("both-9", priority=9, caps=("llm", "gpu")))
    got = []
    for _ in range(4):
        await service.run_until_idle()
        (entry,) = await agent.inbox()
        got.append(entry.task_id)
        await sched.complete(entry.task_id, entry.attempt, "a1")
    assert got == ["both-9", "gpu-7", "plain-5", "llm-5"]


async def test_submit_payload_is_the_wire_task_submit(sched, service: SchedulerService, make_agent) -> None:
    agent = make_agent("a1")
    await agent.online()
    await sched.enqueue(spec("t1", priority=7, timeout_s=45))
    await service.run_until_idle()
    (entry,) = await agent.inbox()
    assert (entry.kind, entry.task_id, entry.attempt) == ("submit", "t1", 1)
    assert json.loads(entry.payload_json) == {
        "taskId": "t1",
        "attempt": 1,
        "type": "echo",
        "input": {"text": "hi"},
        "priority": 7,
        "timeoutSeconds": 45,
    }


async def test_capability_matching(sched, service: SchedulerService, make_agent) -> None:
    plain = make_agent("plain", concurrency=5)
    gpu = make_agent("gpu", concurrency=5, caps=("gpu", "x"))
    await plain.online()
    await gpu.online()
    await sched.enqueue(spec("needs-gpu", caps=("gpu",)))
    await sched.enqueue(spec("needs-gpu-x", caps=("x", "gpu")))
    await service.run_until_idle()
    assert await plain.inbox() == []
    assert {e.task_id for e in await gpu.inbox()} == {"needs-gpu", "needs-gpu-x"}


async def test_pinned_task_goes_only_to_its_agent(sched, service: SchedulerService, make_agent) -> None:
    a = make_agent("a", concurrency=5)
    b = make_agent("b", concurrency=5)
    await a.online()
    await b.online()
    for i in range(4):
        await sched.enqueue(spec(f"pin-{i}", agent_id="b"))
    await service.run_until_idle()
    assert await a.inbox() == []
    assert len(await b.inbox()) == 4


async def test_unrunnable_task_stays_queued_while_others_proceed(sched, service: SchedulerService, make_agent) -> None:
    agent = make_agent("a1", concurrency=3)
    await agent.online()
    await sched.enqueue(spec("needs-tpu", priority=9, caps=("tpu",)))
    await sched.enqueue(spec("pinned-elsewhere", priority=9, agent_id="ghost"))
    await sched.enqueue(spec("ok-1", priority=1))
    await sched.enqueue(spec("ok-2", priority=1))
    await service.run_until_idle()
    assert {e.task_id for e in await agent.inbox()} == {"ok-1", "ok-2"}
    depths = await sched.queue_depths()
    assert depths[9] == 2
    assert sum(depths.values()) == 2


async def test_least_loaded_agent_wins(sched, service: SchedulerService, make_agent) -> None:
    a = make_agent("a", concurrency=4)
    b = make_agent("b", concurrency=4)
    await a.online()
    for i in range(2):
        await sched.enqueue(spec(f"first-{i}"))
    await service.run_until_idle()
    assert len(await a.inbox()) == 2
    await b.online()
    for i in range(2):
        await sched.enqueue(spec(f"second-{i}"))
    await service.run_until_idle()
    assert len(await b.inbox()) == 2


async def test_never_more_than_concurrency_per_agent(sched, service: SchedulerService, make_agent) -> None:
    agents = [make_agent(f"a{i}", concurrency=c) for i, c in enumerate((1, 2, 3, 5))]
    for a in agents:
        await a.online()
    ids = [f"t{i}" for i in range(200)]
    await sched.enqueue_many([spec(t) for t in ids])
    done: list[str] = []
    while len(done) < len(ids):
        await service.run_until_idle()
        for a in agents:
            entries = await a.inbox()
            holding = next(p for p in await sched.online_agents() if p.agent_id == a.agent_id)
            assert holding.running <= a.concurrency
            for e in entries:
                await sched.accept(e.task_id, e.attempt, a.agent_id)
            for e in entries:
                assert (await sched.complete(e.task_id, e.attempt, a.agent_id)).outcome == "ok"
                done.append(e.task_id)
        running = {p.agent_id: p.running for p in await sched.online_agents()}
        assert all(v == 0 for v in running.values())
    assert sorted(done) == sorted(ids)


async def test_not_accepting_agent_gets_nothing(sched, service: SchedulerService, make_agent) -> None:
    agent = make_agent("a1", concurrency=2)
    await agent.online(accepting=False)
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    assert await agent.inbox() == []
    await agent.online(accepting=True)
    await service.run_until_idle()
    assert [e.task_id for e in await agent.inbox()] == ["t1"]


async def test_the_loop_places_a_waiting_task_when_a_slot_frees_and_is_not_woken_for_nothing(
    sched: SchedulerClient, service: SchedulerService, make_agent, redis_client
) -> None:
    """The dispatch loop sleeps on the wake list once a pass has placed all it could: a slot freed while a task
    waits wakes it; a slot freed with every queue empty pushes no wake."""
    agent = make_agent("a1", concurrency=1)
    await agent.online()

    async def dispatched() -> list[str]:
        for _ in range(500):
            if entries := await agent.inbox():
                return [e.task_id for e in entries]
            await asyncio.sleep(0.01)
        raise AssertionError("nothing dispatched")

    await sched.enqueue_many([spec("first"), spec("second")])
    await service.start()
    try:
        assert await dispatched() == ["first"]
        assert (await sched.complete("first", 1, "a1")).outcome == "ok"  # frees the slot "second" waits for
        assert await dispatched() == ["second"]
    finally:
        await service.stop()
    wake = sched.keys.wake()
    await sched.enqueue(spec("third"))
    await redis_client.delete(wake)
    assert (await sched.complete("second", 1, "a1")).outcome == "ok"
    assert await redis_client.llen(wake) == 1  # "third" waits for that slot
    assert await service.run_until_idle() == 1
    assert await dispatched() == ["third"]
    await redis_client.delete(wake)
    assert (await sched.complete("third", 1, "a1")).outcome == "ok"
    assert await redis_client.llen(wake) == 0  # nothing waits


async def test_a_queue_emptied_by_the_first_candidate_does_not_bar_the_others_for_this_pass(
    sched, service: SchedulerService, make_agent
) -> None:
    """The script checks candidates only until their free slots seat the queue: when the first one takes the
    queue's last task into its last slot, the pass must not take the candidates it never checked for full."""
    small = make_agent("small", concurrency=1, lease_s=300.0)  # earlier lease: first among equals
    big = make_agent("big", concurrency=4, caps=("gpu",), lease_s=600.0)
    await small.online()
    await big.online()
    await sched.enqueue(spec("plain"))
    await sched.enqueue(spec("needs-gpu", caps=("gpu",)))
    # One pass places both: `plain` on `small` (checked alone), then `needs-gpu` on `big`.
    assert await service.dispatch_once() == 2
    assert [e.task_id for e in await small.inbox()] == ["plain"]
    assert [e.task_id for e in await big.inbox()] == ["needs-gpu"]
