"""`task/stream` over /ws: every piece reaches watchers in seq order (a resend from 0 adds nothing), a gap is
refused with the offset to resume from, the pieces are recorded and replayed; and a running attempt canceled
by its owner still delivers its partial result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from protocol.messages import Subscribe, TaskResult, TaskStream
from tests.integration.api.test_ws_support import WAIT_S, Stack, payload, stack

__all__ = ("stack",)

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


def _is_status(status: str):  # type: ignore[no-untyped-def]
    return lambda frame: frame.type == "task/status" and payload(frame)["status"] == status


async def test_stream_pieces_reach_the_watcher_in_order_and_a_gap_is_refused(stack: Stack) -> None:
    owner = await stack.person()
    agent, _agent_id, task_id, attempt = await stack.running_task(owner)
    watcher = await stack.client_peer(owner)
    await watcher.send(Subscribe(task_id=task_id, last_seq=0))

    await agent.send(TaskStream(task_id=task_id, attempt=attempt, offset=0, delta="Héllo"))
    await agent.send(TaskStream(task_id=task_id, attempt=attempt, offset=6, delta=", 世界"))
    # A reconnecting agent resends the whole stream: only the new tail counts.
    await agent.send(TaskStream(task_id=task_id, attempt=attempt, offset=0, delta="Héllo, 世界!"))
    ref = await agent.send(TaskStream(task_id=task_id, attempt=attempt, offset=99, delta="lost"))
    gap = await agent.recv_type("error")
    assert payload(gap)["error"] == "stream_gap"
    assert payload(gap)["ref"] == ref
    assert payload(gap)["details"]["expectedOffset"] == len("Héllo, 世界!".encode())
    await agent.send(TaskResult(task_id=task_id, attempt=attempt, output={"text": "Héllo, 世界!"}))
    assert (await agent.recv_type("ack", "error")).type == "ack"

    frames = await watcher.recv_until(_is_status("done"))
    events = frames[1:]
    assert [payload(f)["seq"] for f in events] == list(range(1, len(events) + 1))
    pieces = [payload(f) for f in events if f.type == "task/stream"]
    assert [(p["offset"], p["delta"]) for p in pieces] == [(0, "Héllo"), (6, ", 世界"), (14, "!")]
    assert "".join(p["delta"] for p in pieces) == "Héllo, 世界!"

    # The recorder keeps every piece, so the history outlives Redis' bounded one.
    from api.db.models.tasks import TaskEvent

    async def stored() -> list[Any]:
        async with stack.db() as session:
            rows = await session.scalars(
                select(TaskEvent).where(TaskEvent.task_id == task_id, TaskEvent.type == "task/stream")
            )
            return list(rows.all())

    async with asyncio.timeout(WAIT_S):
        while len(rows := await stored()) < 3:
            await asyncio.sleep(0.05)
    assert [r.data for r in sorted(rows, key=lambda r: r.seq)] == [
        {"offset": 0, "delta": "Héllo"},
        {"offset": 6, "delta": ", 世界"},
        {"offset": 14, "delta": "!"},
    ]

    # A late watcher replays the pieces with the rest of the history.
    late = await stack.client_peer(owner)
    await late.send(Subscribe(task_id=task_id, last_seq=0))
    replayed = await late.recv_until(_is_status("done"))
    assert [payload(f)["delta"] for f in replayed if f.type == "task/stream"] == ["Héllo", ", 世界", "!"]


async def test_replay_from_the_database_rebuilds_stream_pieces(stack: Stack) -> None:
    from api.db.models.tasks import TaskEvent
    from api.ws.replay import _stored_events

    owner = await stack.person()
    agent, _agent_id, task_id, attempt = await stack.running_task(owner)
    await agent.send(TaskStream(task_id=task_id, attempt=attempt, offset=0, delta="abc"))
    await agent.send(TaskResult(task_id=task_id, attempt=attempt, output="abc"))
    await agent.recv_type("ack")

    async def stream_rows() -> int:
        async with stack.db() as session:
            found = await session.scalars(
                select(TaskEvent.seq).where(TaskEvent.task_id == task_id, TaskEvent.type == "task/stream")
            )
            return len(found.all())

    async with asyncio.timeout(WAIT_S):
        while await stream_rows() < 1:
            await asyncio.sleep(0.05)
    events = await _stored_events(stack.db, task_id=task_id, owner_id=owner.id, after_seq=0, before_seq=None)
    streamed = [e.frame for e in events if '"task/stream"' in e.frame]
    assert len(streamed) == 1
    assert '"delta":"abc"' in streamed[0]
    assert '"offset":0' in streamed[0]


async def test_canceled_attempt_result_is_kept_as_partial_output(stack: Stack) -> None:
    from api.tasks.service import TaskService

    owner = await stack.person()
    agent, _agent_id, task_id, attempt = await stack.running_task(owner)
    await agent.send(TaskStream(task_id=task_id, attempt=attempt, offset=0, delta="half an ans"))
    async with asyncio.timeout(WAIT_S):  # applied before the cancel, so it is not refused as too late
        while not [e for e in await stack.scheduler.history(task_id, 0) if e.type == "task/stream"]:
            await asyncio.sleep(0.02)
    async with stack.db() as session:
        await TaskService(session, stack.scheduler).cancel(owner.user, task_id)
        await session.commit()
    await agent.recv_type("task/cancel")
    partial = {"text": "half an ans", "finishReason": "canceled"}
    ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output=partial))
    ack = await agent.recv_type("ack", "error")
    assert (ack.type, payload(ack)) == ("ack", {"ref": ref}), payload(ack)
    row = await stack.task_row(task_id)
    assert (row.status, row.result) == ("canceled", partial)
    # A resend is a duplicate; the row does not change.
    ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output={"text": "other"}))
    again = await agent.recv_type("ack", "error")
    assert payload(again) == {"ref": ref, "duplicate": True}
    assert (await stack.task_row(task_id)).result == partial
