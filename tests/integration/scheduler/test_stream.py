"""`task/stream` pieces in the scheduler script: byte offsets, repeats, overlaps, gaps, attempts; and the
partial result of a canceled attempt."""

from __future__ import annotations

import json

from scheduler.client import SchedulerClient
from scheduler.service import SchedulerService
from scheduler.types import Outcome
from tests.integration.scheduler.conftest import spec


async def _running(sched: SchedulerClient, service: SchedulerService, agent, task_id: str = "t1", **kw):  # type: ignore[no-untyped-def]
    await agent.online()
    await sched.enqueue(spec(task_id, **kw))
    await service.run_until_idle()
    (entry,) = await agent.inbox()
    await sched.accept(task_id, entry.attempt, agent.agent_id)
    return entry


async def _pieces(sched: SchedulerClient, task_id: str = "t1") -> list[dict[str, object]]:
    return [json.loads(e.payload_json) for e in await sched.history(task_id) if e.type == "task/stream"]


async def test_pieces_append_in_order_with_seq_and_byte_offsets(sched, service, make_agent) -> None:
    await _running(sched, service, make_agent("a1"))
    first = await sched.stream("t1", 1, "a1", 0, "héllo")
    second = await sched.stream("t1", 1, "a1", len("héllo".encode()), " 世界")
    assert (first.outcome, second.outcome) == (Outcome.OK, Outcome.OK)
    assert first.seq is not None
    assert second.seq == first.seq + 1
    pieces = await _pieces(sched)
    assert pieces == [
        {"seq": first.seq, "taskId": "t1", "attempt": 1, "offset": 0, "delta": "héllo"},
        {"seq": second.seq, "taskId": "t1", "attempt": 1, "offset": 6, "delta": " 世界"},
    ]


async def test_repeat_is_ignored_and_overlap_trimmed_to_its_new_part(sched, service, make_agent) -> None:
    await _running(sched, service, make_agent("a1"))
    await sched.stream("t1", 1, "a1", 0, "abc")
    assert (await sched.stream("t1", 1, "a1", 0, "abc")).outcome == Outcome.DUPLICATE
    assert (await sched.stream("t1", 1, "a1", 1, "b")).outcome == Outcome.DUPLICATE
    # A reconnecting agent resends everything from offset 0: only "déf" is new.
    assert (await sched.stream("t1", 1, "a1", 0, "abcdéf")).outcome == Outcome.OK
    assert [p["delta"] for p in await _pieces(sched)] == ["abc", "déf"]
    assert [p["offset"] for p in await _pieces(sched)] == [0, 3]


async def test_piece_beyond_the_end_is_a_gap_naming_the_expected_offset(sched, service, make_agent) -> None:
    await _running(sched, service, make_agent("a1"))
    await sched.stream("t1", 1, "a1", 0, "ab")
    gap = await sched.stream("t1", 1, "a1", 5, "zz")
    assert (gap.outcome, gap.expected_offset, gap.seq) == (Outcome.STREAM_GAP, 2, None)
    assert [p["delta"] for p in await _pieces(sched)] == ["ab"]


async def test_a_cut_inside_a_utf8_character_is_refused(sched, service, make_agent) -> None:
    await _running(sched, service, make_agent("a1"))
    await sched.stream("t1", 1, "a1", 0, "a世")  # 1 + 3 bytes
    # Claims to start at byte 2, inside 世: the new part would begin with a continuation byte.
    bad = await sched.stream("t1", 1, "a1", 2, "世x")
    assert (bad.outcome, bad.expected_offset) == (Outcome.BAD_OFFSET, 4)
    assert [p["delta"] for p in await _pieces(sched)] == ["a世"]


async def test_stream_is_fenced_and_restarts_with_a_new_attempt(sched, service, make_agent, clock) -> None:
    a1 = make_agent("a1")
    await _running(sched, service, a1)
    await sched.stream("t1", 1, "a1", 0, "first try")
    assert (await sched.stream("t1", 1, "intruder", 9, "x")).outcome == Outcome.NOT_ASSIGNED
    assert (await sched.stream("t1", 2, "a1", 0, "x")).outcome == Outcome.STALE_ATTEMPT
    await sched.fail("t1", 1, "a1", error="boom", message="m", retryable=True, retry_delay_s=0)
    clock.advance(5_000)
    await service.run_until_idle()
    (entry,) = await a1.inbox()
    assert entry.attempt == 2
    assert (await sched.stream("t1", 1, "a1", 9, "late")).outcome == Outcome.STALE_ATTEMPT
    again = await sched.stream("t1", 2, "a1", 0, "second")
    assert again.outcome == Outcome.OK
    assert [(p["attempt"], p["offset"], p["delta"]) for p in await _pieces(sched)] == [
        (1, 0, "first try"),
        (2, 0, "second"),
    ]


async def test_canceled_running_attempt_still_delivers_its_partial_result_once(sched, service, make_agent) -> None:
    await _running(sched, service, make_agent("a1"))
    await sched.stream("t1", 1, "a1", 0, "partial")
    await sched.cancel("t1")
    assert (await sched.stream("t1", 1, "a1", 7, " more")).outcome == Outcome.TERMINAL
    first = await sched.complete("t1", 1, "a1")
    again = await sched.complete("t1", 1, "a1")
    assert (first.outcome, first.status, first.seq) == (Outcome.OK, "canceled", None)
    assert (again.outcome, again.status) == (Outcome.DUPLICATE, "canceled")
    statuses = [e.status for e in await sched.history("t1") if e.type == "task/status"]
    assert statuses[-1] == "canceled"
    assert "done" not in statuses
    # Any other agent, or a failure report, is still refused.
    assert (await sched.complete("t1", 1, "intruder")).outcome == Outcome.TERMINAL
    assert (await sched.fail("t1", 1, "a1", error="x", message="m", retryable=False)).outcome == Outcome.TERMINAL


async def test_result_after_cancel_of_a_queued_retry_is_refused(sched, service, make_agent) -> None:
    await _running(sched, service, make_agent("a1"))
    await sched.fail("t1", 1, "a1", error="boom", message="m", retryable=True)
    await sched.cancel("t1")
    assert (await sched.complete("t1", 1, "a1")).outcome == Outcome.TERMINAL
