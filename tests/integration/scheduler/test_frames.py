"""Agent frames: fencing by (task, attempt, agent), duplicates, cancel, retries, failures."""

from __future__ import annotations

import asyncio
import json

from scheduler.client import SchedulerClient
from scheduler.clock import FakeClock
from scheduler.service import SchedulerService
from scheduler.types import Outcome
from tests.integration.scheduler.conftest import spec


async def _dispatched(sched: SchedulerClient, service: SchedulerService, agent, task_id: str = "t1", **kw):  # type: ignore[no-untyped-def]
    await agent.online()
    await sched.enqueue(spec(task_id, **kw))
    await service.run_until_idle()
    (entry,) = await agent.inbox()
    return entry


async def test_accept_progress_complete_happy_path(sched, service, make_agent) -> None:
    entry = await _dispatched(sched, service, make_agent("a1"))
    accepted = await sched.accept("t1", entry.attempt, "a1")
    assert (accepted.outcome, accepted.status) == (Outcome.OK, "running")
    prog = await sched.progress("t1", 1, "a1", b'{"taskId":"t1","attempt":1,"message":"half"}')
    assert prog.outcome == Outcome.OK
    done = await sched.complete("t1", 1, "a1")
    assert (done.outcome, done.status) == (Outcome.OK, "done")
    assert accepted.seq is not None
    assert prog.seq is not None
    assert done.seq is not None
    assert accepted.seq < prog.seq < done.seq


async def test_fencing_refuses_wrong_agent_and_stale_attempt(sched, service, make_agent) -> None:
    entry = await _dispatched(sched, service, make_agent("a1"))
    assert (await sched.accept("t1", entry.attempt, "intruder")).outcome == Outcome.NOT_ASSIGNED
    assert (await sched.accept("t1", entry.attempt + 1, "a1")).outcome == Outcome.STALE_ATTEMPT
    assert (await sched.complete("t1", 0, "a1")).outcome == Outcome.STALE_ATTEMPT
    assert (await sched.progress("nope", 1, "a1", b'{"taskId":"nope"}')).outcome == Outcome.NOT_FOUND
    assert (await sched.accept("t1", entry.attempt, "a1")).outcome == Outcome.OK


async def test_duplicate_accept_and_result_are_idempotent(sched, service, make_agent) -> None:
    entry = await _dispatched(sched, service, make_agent("a1"))
    assert (await sched.accept("t1", 1, "a1")).outcome == Outcome.OK
    assert (await sched.accept("t1", 1, "a1")).outcome == Outcome.DUPLICATE
    first = await sched.complete("t1", entry.attempt, "a1")
    again = await sched.complete("t1", entry.attempt, "a1")
    assert (first.outcome, again.outcome) == (Outcome.OK, Outcome.DUPLICATE)
    assert (await sched.accept("t1", 1, "a1")).outcome == Outcome.DUPLICATE
    # Another kind of finishing frame after the result changes nothing.
    failed = await sched.fail("t1", 1, "a1", error="boom", message="x", retryable=False)
    assert failed.outcome == Outcome.TERMINAL
    events = await sched.history("t1")
    assert [e.status for e in events if e.type == "task/status"] == ["queued", "assigned", "running", "done"]
    (slots,) = await sched.online_agents()
    assert slots.running == 0


async def test_result_without_accept_finishes_the_task(sched, service, make_agent) -> None:
    await _dispatched(sched, service, make_agent("a1"))
    assert (await sched.complete("t1", 1, "a1")).status == "done"


async def test_progress_payload_gets_seq_spliced(sched, service, make_agent) -> None:
    await _dispatched(sched, service, make_agent("a1"))
    await sched.accept("t1", 1, "a1")
    raw = b'{"taskId":"t1","attempt":1,"data":{"tokens":["a","b"]},"message":"m"}'
    applied = await sched.progress("t1", 1, "a1", raw)
    event = (await sched.history("t1"))[-1]
    assert (event.type, event.seq) == ("task/progress", applied.seq)
    assert json.loads(event.payload_json) == {"seq": applied.seq, **json.loads(raw)}


async def test_progress_frames_of_one_call_keep_their_bytes_whatever_they_hold(sched, service, make_agent) -> None:
    # One call packs all its frames into one script argument: payloads with spaces, newlines, a header-like
    # line or multi-byte text must come out byte for byte, each on its own task.
    agent = make_agent("a1", concurrency=2)
    await agent.online()
    await sched.enqueue(spec("t1"))
    await sched.enqueue(spec("t2"))
    await service.run_until_idle()
    bodies = [
        b'{"taskId":"t1",\n "attempt":1,"message":"t2 1 a1 9\\n"}',
        '{"taskId":"t2","attempt":1,"message":"\u00e9t\u00e9 \u2603 x"}'.encode(),
        b'{"taskId":"t1","attempt":1,"data":{"a b":[1, 2]}}',
    ]
    applied = await asyncio.gather(
        *(sched.progress(task, 1, "a1", body) for task, body in zip(("t1", "t2", "t1"), bodies, strict=True))
    )
    assert [a.outcome for a in applied] == [Outcome.OK] * 3
    for task, body in (("t1", bodies[0]), ("t2", bodies[1]), ("t1", bodies[2])):
        stored = [e.payload_json for e in await sched.history(task) if e.type == "task/progress"]
        assert any(json.loads(p) == {"seq": json.loads(p)["seq"], **json.loads(body)} for p in stored)


async def test_progress_of_one_loop_turn_shares_one_script_call(sched, service, make_agent) -> None:
    agent = make_agent("a1", concurrency=2)
    await agent.online()
    await sched.enqueue(spec("t1"))
    await sched.enqueue(spec("t2"))
    await service.run_until_idle()
    assert len(await agent.inbox()) == 2
    calls: list[int] = []
    run = sched.scripts.progress

    async def counted(frames, now_ms):  # type: ignore[no-untyped-def]
        calls.append(len(frames))
        return await run(frames, now_ms)

    sched.scripts.progress = counted  # type: ignore[method-assign]
    first, stale, second, other = await asyncio.gather(
        sched.progress("t1", 1, "a1", b'{"taskId":"t1","attempt":1,"message":"1"}'),
        sched.progress("t1", 2, "a1", b'{"taskId":"t1","attempt":2,"message":"x"}'),
        sched.progress("t1", 1, "a1", b'{"taskId":"t1","attempt":1,"message":"2"}'),
        sched.progress("t2", 1, "a1", b'{"taskId":"t2","attempt":1,"message":"1"}'),
    )
    assert calls == [4]
    assert stale.outcome == Outcome.STALE_ATTEMPT
    assert (first.outcome, second.outcome, other.outcome) == (Outcome.OK, Outcome.OK, Outcome.OK)
    assert first.seq is not None
    assert second.seq is not None
    assert first.seq < second.seq
    # The first frame of each task applied the accept it implies; the task's events keep the call's order.
    events = await sched.history("t1")
    assert [(e.type, e.status) for e in events][-3:] == [
        ("task/status", "running"),
        ("task/progress", None),
        ("task/progress", None),
    ]
    assert [json.loads(e.payload_json).get("message") for e in events if e.type == "task/progress"] == ["1", "2"]
    assert [e.status for e in await sched.history("t2") if e.type == "task/status"][-1] == "running"


async def test_cancel_queued_task(sched, service, make_agent) -> None:
    await sched.enqueue(spec("t1"))
    result = await sched.cancel("t1")
    assert (result.outcome, result.agent_id) == ("canceled", None)
    agent = make_agent("a1")
    await agent.online()
    await service.run_until_idle()
    assert await agent.inbox() == []
    assert sum((await sched.queue_depths()).values()) == 0
    assert (await sched.cancel("t1")).outcome == "terminal"
    assert (await sched.cancel("unknown")).outcome == "not_found"


async def test_cancel_running_task_puts_cancel_in_inbox(sched, service, make_agent) -> None:
    agent = make_agent("a1")
    await _dispatched(sched, service, agent)
    await sched.accept("t1", 1, "a1")
    result = await sched.cancel("t1", reason="user asked")
    assert (result.outcome, result.agent_id, result.attempt) == ("canceled", "a1", 1)
    (cancel,) = await agent.inbox("cancel")
    assert json.loads(cancel.payload_json) == {"taskId": "t1", "attempt": 1, "reason": "user asked"}
    (presence,) = await sched.online_agents()
    assert presence.running == 0
    # The canceled attempt's result is taken as partial output; the status stays and no slot is freed twice.
    late = await sched.complete("t1", 1, "a1")
    assert (late.outcome, late.status) == (Outcome.OK, "canceled")
    assert (await sched.fail("t1", 1, "a1", error="x", message="m", retryable=False)).outcome == Outcome.TERMINAL
    (presence,) = await sched.online_agents()
    assert presence.running == 0


async def test_retry_with_backoff_then_success(sched, service, make_agent, clock: FakeClock) -> None:
    agent = make_agent("a1")
    await _dispatched(sched, service, agent, max_attempts=3)
    await sched.accept("t1", 1, "a1")
    failed = await sched.fail("t1", 1, "a1", error="flaky", message="try again", retryable=True, retry_delay_s=5)
    assert (failed.outcome, failed.status) == (Outcome.OK, "scheduled")
    # Duplicate error frame for the same attempt: acknowledged, nothing changes.
    dup = await sched.fail("t1", 1, "a1", error="flaky", message="try again", retryable=True)
    assert dup.outcome == Outcome.DUPLICATE
    await service.run_until_idle()
    assert await agent.inbox() == []  # the agent asked for at least 5 s
    clock.advance(4_900)
    await service.run_until_idle()
    assert await agent.inbox() == []
    clock.advance(100)
    await service.run_until_idle()
    (second,) = await agent.inbox()
    assert second.attempt == 2
    assert (await sched.complete("t1", 1, "a1")).outcome == Outcome.STALE_ATTEMPT
    assert (await sched.complete("t1", 2, "a1")).status == "done"
    statuses = [e.status for e in await sched.history("t1") if e.type == "task/status"]
    # The second attempt's result without an accept implies it: `running` is recorded before `done`.
    assert statuses == ["queued", "assigned", "running", "scheduled", "queued", "assigned", "running", "done"]


async def test_backoff_without_agent_delay_stays_within_the_cap(sched, service, make_agent, clock) -> None:
    agent = make_agent("a1")
    await _dispatched(sched, service, agent, max_attempts=5)
    await sched.fail("t1", 1, "a1", error="flaky", message="", retryable=True)
    # Full jitter on attempt 1: somewhere in [0, base=200 ms].
    clock.advance(200)
    await service.run_until_idle()
    assert [e.attempt for e in await agent.inbox()] == [2]


async def test_retries_exhausted_then_failed(sched, service, make_agent, clock: FakeClock) -> None:
    agent = make_agent("a1")
    await _dispatched(sched, service, agent, max_attempts=2)
    await sched.fail("t1", 1, "a1", error="flaky", message="", retryable=True)
    clock.advance(10_000)
    await service.run_until_idle()
    (second,) = await agent.inbox()
    last = await sched.fail("t1", second.attempt, "a1", error="flaky", message="", retryable=True)
    assert last.status == "failed"
    clock.advance(60_000)
    await service.run_until_idle()
    assert await agent.inbox() == []
    final = (await sched.history("t1"))[-1]
    assert (final.status, final.reason, final.attempt) == ("failed", "flaky", 2)


async def test_non_retryable_error_fails_at_once(sched, service, make_agent) -> None:
    await _dispatched(sched, service, make_agent("a1"), max_attempts=3)
    assert (await sched.fail("t1", 1, "a1", error="bad_input", message="", retryable=False)).status == "failed"


async def test_frames_ack_the_submit_entry_they_are_given_whatever_the_outcome(sched, service, make_agent) -> None:
    """accept / complete / fail take the submit's inbox entry id and ack and delete it in the same call."""
    agent = make_agent("a1", concurrency=3)
    await agent.online()
    key = sched.keys.inbox("a1")
    for task_id in ("t1", "t2", "t3"):
        await sched.enqueue(spec(task_id))
        await service.run_until_idle()
    entries = await sched.read_inbox("a1", "c1", block_ms=0, count=10)  # read, not acked
    ids = {e.task_id: e.entry_id for e in entries if e.kind == "submit"}
    assert set(ids) == {"t1", "t2", "t3"}
    assert (await sched._redis.xpending(key, "deliver"))["pending"] == len(ids)

    first, *rest = sorted(ids)
    accepted = await sched.accept(first, 1, "a1", inbox_entry=ids[first])
    assert accepted.outcome == Outcome.OK
    done = await sched.complete(first, 1, "a1", inbox_entry="")  # nothing left to ack
    assert done.outcome == Outcome.OK
    # Both in one script call (the same loop turn); a refused frame (wrong attempt) still acks: the agent had
    # the submit.
    refused = await asyncio.gather(*(sched.complete(t, 2, "a1", inbox_entry=ids[t]) for t in rest))
    assert [r.outcome for r in refused] == [Outcome.STALE_ATTEMPT] * len(rest)
    assert (await sched._redis.xpending(key, "deliver"))["pending"] == 0
    assert await sched._redis.xlen(key) == 0


async def test_fail_acks_the_submit_entry(sched, service, make_agent) -> None:
    agent = make_agent("a1")
    await agent.online()
    await sched.enqueue(spec("t1"))
    await service.run_until_idle()
    (entry,) = await sched.read_inbox("a1", "c1", block_ms=0, count=10)
    failed = await sched.fail("t1", 1, "a1", error="boom", message="m", retryable=False, inbox_entry=entry.entry_id)
    assert (failed.outcome, failed.status) == (Outcome.OK, "failed")
    key = sched.keys.inbox("a1")
    assert (await sched._redis.xpending(key, "deliver"))["pending"] == 0
    assert await sched._redis.xlen(key) == 0
