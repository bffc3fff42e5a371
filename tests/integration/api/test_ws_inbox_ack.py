"""A submit's inbox entry is acked by the script call of the frame that answers it (accept, result, error):
no call of its own, so the entry is gone from the inbox (acked and deleted) before the frame's ack leaves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from protocol.messages import TaskAccept, TaskError, TaskResult
from scheduler.keys import INBOX_GROUP, Keys
from tests.integration.api.test_ws_support import payload, stack

if TYPE_CHECKING:
    from protocol.messages import Message
    from tests.integration.api.test_ws_support import Stack

__all__ = ("stack",)


async def _inbox_state(stack: Stack, agent_id: str) -> tuple[int, int]:
    """(entries pending in the delivery group, entries in the stream)."""
    key = Keys(stack.settings.redis.prefix).inbox(agent_id)
    pending = await stack.redis.xpending(key, INBOX_GROUP)
    return int(pending["pending"]), int(await stack.redis.xlen(key))


@pytest.mark.parametrize("first", ["accept", "result", "error"])
async def test_the_answering_frame_acks_the_submit_entry(stack: Stack, first: str) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    await stack.dispatch()
    attempt = int(payload(await agent.recv_type("task/submit"))["attempt"])
    assert await _inbox_state(stack, agent_id) == (1, 1)  # delivered, not acked yet

    frame: Message
    if first == "accept":
        frame = TaskAccept(task_id=task_id, attempt=attempt)
    elif first == "result":  # the accept implied
        frame = TaskResult(task_id=task_id, attempt=attempt, output="x")
    else:
        frame = TaskError(task_id=task_id, attempt=attempt, error="boom", message="m", retryable=False)
    ref = await agent.send(frame)
    assert payload(await agent.recv_type("ack", "error")) == {"ref": ref}
    assert await _inbox_state(stack, agent_id) == (0, 0)

    if first == "accept":  # the result after an explicit accept has no entry left to ack
        ref = await agent.send(TaskResult(task_id=task_id, attempt=attempt, output="x"))
        assert payload(await agent.recv_type("ack", "error")) == {"ref": ref}
    row = await stack.task_row(task_id)
    assert row.status == ("failed" if first == "error" else "done")
