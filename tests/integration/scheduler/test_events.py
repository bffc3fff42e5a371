"""Events: gap-free seq per task, history replay, the recorder stream, watch fan-out, TTLs."""

from __future__ import annotations

import asyncio
import json

from scheduler.client import SchedulerClient
from scheduler.keys import Keys
from scheduler.presence import mark_watching
from scheduler.scripts import PROGRESS_MARK_EVERY
from tests.integration.scheduler.conftest import spec


async def _full_cycle(sched: SchedulerClient, service, make_agent, clock) -> None:  # type: ignore[no-untyped-def]
    """Tasks through every path: done, progress, retry, cancel (queued and running), loss, delayed."""
    a = make_agent("a", concurrency=4, lease_s=5)
    await a.online()
    await sched.enqueue_many([spec(f"t{i}", max_attempts=2) for i in range(4)])
    await sched.enqueue(spec("late", run_at_ms=clock.now_ms() + 1000))
    await sched.enqueue(spec("cancel-queued", caps=("nobody",)))
    await service.run_until_idle()
    entries = {e.task_id: e for e in await a.inbox()}
    for e in entries.values():
        await sched.accept(e.task_id, e.attempt, "a")
    await sched.progress("t0", 1, "a", b'{"taskId":"t0","attempt":1,"message":"x"}')
    await sched.complete("t0", 1, "a")
    await sched.fail("t1", 1, "a", error="e", message="m", retryable=False)
    await sched.fail("t2", 1, "a", error="e", message="m", retryable=True)
    await sched.cancel("t3")
    await sched.cancel("cancel-queued")
    clock.advance(2_000)
    await a.online()
    await service.run_until_idle()
    for e in await a.inbox():
        await sched.complete(e.task_id, e.attempt, "a")
    await service.run_until_idle()


async def test_seq_is_gap_free_and_history_replays_after_a_seq(sched, service, make_agent, clock) -> None:
    a = make_agent("a")
    await a.online()
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    await a.inbox()
    await sched.accept("t1", 1, "a")
    for i in range(5):
        await sched.progress("t1", 1, "a", b'{"taskId":"t1","attempt":1,"message":"%d"}' % i)
    await sched.complete("t1", 1, "a")
    history = await sched.history("t1")
    assert [e.seq for e in history] == list(range(1, 10))
    for e in history:
        assert json.loads(e.payload_json)["seq"] == e.seq
    assert [e.seq for e in await sched.history("t1", after_seq=6)] == [7, 8, 9]
    assert await sched.history("t1", after_seq=9) == []
    status = json.loads(history[-1].payload_json)
    assert (status["status"], status["agentId"], status["at"][-1]) == ("done", "a", "Z")


async def test_status_event_time_is_rfc3339_of_the_clock(sched: SchedulerClient, clock) -> None:
    clock.advance(-clock.now_ms() + 1_709_251_199_123)  # 2024-02-29T23:59:59.123Z, a leap day
    await sched.enqueue(spec("t1"))
    (event,) = await sched.history("t1")
    assert json.loads(event.payload_json)["at"] == "2024-02-29T23:59:59.123Z"
    assert event.at_ms == 1_709_251_199_123


async def test_recorder_stream_carries_every_event_in_order(sched, service, make_agent, clock) -> None:
    await _full_cycle(sched, service, make_agent, clock)
    events = []
    while batch := await sched.read_events("rec-1", block_ms=0, count=100):
        events.extend(batch)
        await sched.ack_events([e.entry_id for e in batch])
    by_task: dict[str, list[int]] = {}
    for e in events:
        by_task.setdefault(e.task_id, []).append(e.seq)
    for task_id, seqs in by_task.items():
        # Every event of the task in seq order, but progress only at the marks (see PROGRESS_MARK_EVERY).
        # The first status neither: the task's row holds it from the INSERT (a fresh enqueue, seq 1).
        kept = [
            e.seq
            for e in await sched.history(task_id)
            if e.seq > 1 and (e.type != "task/progress" or e.seq % PROGRESS_MARK_EVERY == 0)
        ]
        assert seqs == kept, task_id
    assert by_task["t0"] == [2, 3, 5]  # its progress (seq 4) is for watchers only
    finals = {e.task_id: e.status for e in events if e.type == "task/status"}
    assert finals == {
        "t0": "done",
        "t1": "failed",
        "t2": "done",
        "t3": "canceled",
        "late": "done",
        "cancel-queued": "canceled",
    }
    assert await sched.claim_events_pending("rec-2", min_idle_ms=0) == []


async def test_a_first_dispatch_tells_the_recorder_when_its_task_was_queued(sched, service, make_agent, clock) -> None:
    """A fresh task's `queued` is not in the recorder's stream (its row has it): the `assigned` entry of its
    first dispatch carries the queued time instead. A task queued later (a due `runAt`, a requeue) keeps its
    `queued` entry, and its `assigned` entry carries none."""
    a = make_agent("a", concurrency=2)
    await a.online()
    queued_at = clock.now_ms()
    await sched.enqueue(spec("now"))
    await sched.enqueue(spec("later", run_at_ms=queued_at + 1000))
    clock.advance(250)
    await service.run_until_idle()
    clock.advance(1000)
    await service.run_until_idle()
    events = await sched.read_events("rec-1", block_ms=0, count=100)
    seen = [(e.task_id, e.seq, e.status, e.queued_ms) for e in events]
    assert seen == [
        ("now", 2, "assigned", queued_at),
        ("later", 2, "queued", None),
        ("later", 3, "assigned", None),
    ]
    assert events[0].at_ms == queued_at + 250
    # Watchers and the replay history still have every status.
    assert [e.status for e in await sched.history("now")] == ["queued", "assigned"]
    assert [e.status for e in await sched.history("later")] == ["scheduled", "queued", "assigned"]


async def test_progress_reaches_the_recorder_stream_only_at_its_marks(sched, service, make_agent) -> None:
    a = make_agent("a")
    await a.online()
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    await a.inbox()
    await sched.accept("t1", 1, "a")  # seq 3
    n = PROGRESS_MARK_EVERY + 10
    for i in range(n):
        assert (await sched.progress("t1", 1, "a", b'{"taskId":"t1","attempt":1,"message":"%d"}' % i)).outcome == "ok"
    await sched.complete("t1", 1, "a")
    events = await sched.read_events("rec-1", block_ms=0, count=10_000)
    assert [(e.seq, e.type) for e in events] == [
        (2, "task/status"),
        (3, "task/status"),
        (PROGRESS_MARK_EVERY, "task/progress"),
        (n + 4, "task/status"),
    ]
    # Watchers' replay still has every one of them.
    assert [e.seq for e in await sched.history("t1", count=n + 10)] == list(range(1, n + 5))


async def test_events_are_published_to_the_owner_channel(sched, redis_client) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(sched.keys.watch_channel("owner-1"))
    # Someone watches (an API process with a client socket says so; otherwise nothing is published).
    await mark_watching(redis_client, sched.keys, "api-1", sched.clock.now_ms(), 60_000)
    try:
        await sched.enqueue(spec("t1"))
        async with asyncio.timeout(5):
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg:
                    break
        body = json.loads(msg["data"])
        assert (body["type"], body["ownerId"], body["taskId"]) == ("task/status", "owner-1", "t1")
        assert (body["seq"], body["payload"]["status"]) == (1, "queued")
    finally:
        await pubsub.aclose()


async def test_the_watching_index_expires_with_its_longest_mark(sched, redis_client) -> None:
    """Each API process marks itself; the index lives as long as the longest mark, whoever refreshed last."""
    key = sched.keys.watching()
    now = sched.clock.now_ms()
    await mark_watching(redis_client, sched.keys, "api-1", now, 60_000)
    await mark_watching(redis_client, sched.keys, "api-2", now, 10_000)  # a shorter mark does not shorten it
    assert 50_000 < await redis_client.pttl(key) <= 60_000
    await mark_watching(redis_client, sched.keys, "api-2", now, 120_000)  # a longer one extends it
    assert 110_000 < await redis_client.pttl(key) <= 120_000
    assert await redis_client.zscore(key, "api-1") == now + 60_000
    assert await redis_client.zscore(key, "api-2") == now + 120_000


async def test_no_key_without_ttl_after_a_full_cycle(sched, service, make_agent, clock, redis_client) -> None:
    await _full_cycle(sched, service, make_agent, clock)
    await sched.read_events("rec-1", block_ms=0, count=1000)
    await sched.mark_epoch()
    keys = Keys(sched.keys.prefix)
    # Bounded by design (see the key map): one counter, one stream capped by MAXLEN, one epoch
    # marker, the agents lease index (one member per live agent), the finished-task counters (three fields),
    # the wake list (one nudge at most).
    allowed = {keys.ord_counter(), keys.events(), keys.epoch(), keys.agents(), keys.task_counts(), keys.wake()}
    left = {k.decode() async for k in redis_client.scan_iter(match=keys.pattern(), count=1000)}
    assert left, "the cycle wrote nothing?"
    without_ttl = {k for k in left if await redis_client.ttl(k) == -1} - allowed
    assert without_ttl == set()
    # Every queue, registry and timer index drained with the tasks.
    for empty in (keys.queues(), keys.routes(), keys.delayed(), keys.deadlines()):
        assert empty not in left


async def test_a_result_that_implies_the_accept_is_one_stream_entry_read_as_two_events(
    sched: SchedulerClient, service, make_agent, redis_client
) -> None:  # type: ignore[no-untyped-def]
    """complete.lua writes the implied `running` into its `done` entry; readers (the recorder's read and the
    claim of another replica's unacknowledged entries) get both events, `running` first, as the history has them."""
    a = make_agent("a")
    await a.online()
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    (entry,) = await a.inbox()
    applied = await sched.complete(entry.task_id, entry.attempt, "a")  # no accept: the result implies it
    assert applied.status == "done"
    assert await redis_client.xlen(sched.keys.events()) == 2  # `assigned`, then `done` carrying `running`
    read = await sched.read_events("rec-1", block_ms=0, count=100)
    claimed = await sched.claim_events_pending("rec-2", min_idle_ms=0)
    history = {e.seq: e for e in await sched.history("t1")}
    for events in (read, claimed):
        assert [(e.seq, e.status) for e in events] == [(2, "assigned"), (3, "running"), (4, "done")]
        running, done = events[1], events[2]
        assert running.entry_id == done.entry_id
        assert (running.attempt, running.agent_id, running.at_ms) == (done.attempt, done.agent_id, done.at_ms)
        assert running.reason is None
        assert running.queued_ms is None
        # The implied event's payload is the one watchers got and the replay history keeps.
        assert running.payload_json == history[3].payload_json
        assert json.loads(running.payload_json)["status"] == "running"
