"""The progress gate on a real server: it adds nothing to a stream within the rate, and the progress it holds
back under a flood is applied before the attempt's result, never refused after it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from api.ws.agent_session import AgentSession
from protocol.messages import Subscribe, TaskAccept, TaskProgress, TaskResult
from tests.integration.api.test_ws_liveness import SPARE_SLOTS, _submits
from tests.integration.api.test_ws_support import WAIT_S, Stack, open_stack, payload, ws_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from api.settings import ApiSettings

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


@pytest.fixture
async def slow_gate_stack(make_settings: Callable[..., ApiSettings]) -> AsyncIterator[Stack]:
    """Two progress frames a second per attempt: any burst past the bucket is held back."""
    async for running in open_stack(ws_settings(make_settings, TASKYARD_API_PROGRESS_RATE_PER_S=2)):
        yield running


async def test_held_progress_is_applied_before_the_result(
    slow_gate_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = slow_gate_stack
    # A busy server: each result's handler starts only after the held progress' window has opened (0.5 s),
    # so the reader's periodic flush gets a chance to hand that progress on after the result.
    original = AgentSession._flush_attempt

    async def late(self: AgentSession, task_id: str, attempt: int) -> None:
        await asyncio.sleep(0.8)
        await original(self, task_id, attempt)

    monkeypatch.setattr(AgentSession, "_flush_attempt", late)
    owner = await stack.person()
    count, steps = 5, 12
    agent_id, token = await stack.agent(owner, concurrency=count + SPARE_SLOTS)
    agent = await stack.agent_peer(agent_id, token)
    watcher = await stack.client_peer(owner)
    sub = await watcher.send(Subscribe(all=True))
    assert payload(await watcher.recv_type("ack")) == {"ref": sub}
    task_ids = {await stack.submit(owner, agent_id=agent_id) for _ in range(count)}
    attempts = await _submits(stack, agent, task_ids)

    # A flood far past the rate, then the result right behind it: most progress is held by the gate.
    refs: set[str] = set()
    for t, a in attempts.items():
        refs.add(await agent.send(TaskAccept(task_id=t, attempt=a)))
    for step in range(steps):
        for t, a in attempts.items():
            await agent.send(TaskProgress(task_id=t, attempt=a, data={"step": step}))
    for t, a in attempts.items():
        refs.add(await agent.send(TaskResult(task_id=t, attempt=a, output={"ok": True})))
    while refs:
        frame = await agent.recv_type("ack", "error")
        assert frame.type == "ack", payload(frame)  # a held progress refused after its result would show here
        refs.discard(payload(frame)["ref"])

    # Each task's last progress event before `done` is the last step sent: the held frame was kept.
    last_step: dict[str, int] = {}
    done: set[str] = set()
    async with asyncio.timeout(WAIT_S):
        while done != task_ids:
            frame = await watcher.recv_type("task/progress", "task/status")
            body = payload(frame)
            if body["taskId"] not in task_ids:
                continue
            if frame.type == "task/progress":
                assert body["taskId"] not in done
                last_step[body["taskId"]] = body["data"]["step"]
            elif body["status"] == "done":
                done.add(body["taskId"])
    assert last_step == dict.fromkeys(task_ids, steps - 1)


async def test_progress_within_the_rate_is_applied_at_once(slow_gate_stack: Stack) -> None:
    """Spaced a bit more than the rate allows on average: no frame waits for a window, none is coalesced."""
    stack = slow_gate_stack
    owner = await stack.person()
    agent_id, token = await stack.agent(owner, concurrency=1 + SPARE_SLOTS)
    agent = await stack.agent_peer(agent_id, token)
    watcher = await stack.client_peer(owner)
    task_id = await stack.submit(owner, agent_id=agent_id)
    sub = await watcher.send(Subscribe(task_id=task_id))
    assert payload(await watcher.recv_type("ack")) == {"ref": sub}
    attempts = await _submits(stack, agent, {task_id})
    await agent.send(TaskAccept(task_id=task_id, attempt=attempts[task_id]))
    seen: list[int] = []
    for step in range(3):
        await agent.send(TaskProgress(task_id=task_id, attempt=attempts[task_id], data={"step": step}))
        async with asyncio.timeout(WAIT_S):
            while True:
                frame = await watcher.recv_type("task/progress", "task/status")
                if frame.type == "task/progress":
                    seen.append(payload(frame)["data"]["step"])
                    break
        await asyncio.sleep(0.6)  # 2/s: one token back every 0.5 s
    # Every step arrived before the next was sent: none was held back for a window or coalesced away.
    assert seen == [0, 1, 2]
