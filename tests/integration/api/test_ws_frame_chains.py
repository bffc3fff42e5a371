"""An agent's task frames on a real server, where a progress frame is applied from a callback (no handler task):
its refusal or storage error is answered by its ref, ahead of the next frame of its task, and the task's
later frames still run."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec
import pytest
import redis.exceptions

from protocol.messages import TaskAccept, TaskProgress
from scheduler.client import SchedulerClient
from tests.integration.api.test_ws_support import Peer, Stack, open_stack, payload, ws_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from api.settings import ApiSettings
    from scheduler.types import Applied

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


@pytest.fixture
async def stack(make_settings: Callable[..., ApiSettings]) -> AsyncIterator[Stack]:
    """Progress coalescing off (rate 0), so every progress frame reaches the scheduler at once."""
    async for running in open_stack(ws_settings(make_settings, TASKYARD_API_PROGRESS_RATE_PER_S=0)):
        yield running


async def _submitted(stack: Stack) -> tuple[Peer, str, int]:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    await stack.dispatch()
    return agent, task_id, int(payload(await agent.recv_type("task/submit"))["attempt"])


async def test_a_refused_progress_is_answered_before_the_next_frame_of_its_task(stack: Stack) -> None:
    agent, task_id, attempt = await _submitted(stack)
    stale = await agent.send(TaskProgress(task_id=task_id, attempt=attempt + 1, message="not mine"))
    accept = await agent.send(TaskAccept(task_id=task_id, attempt=attempt))

    first = await agent.recv_type("ack", "error")
    assert first.type == "error", first
    assert payload(first)["ref"] == stale
    assert payload(first)["error"] == "stale_attempt"
    second = await agent.recv_type("ack", "error")
    assert second.type == "ack", second
    assert payload(second)["ref"] == accept


async def test_a_progress_lost_to_a_storage_error_is_answered_and_its_task_goes_on(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, task_id, attempt = await _submitted(stack)
    original = SchedulerClient.progress_soon
    failures = 1

    def flaky(self: SchedulerClient, *args: object) -> asyncio.Future[Applied]:
        nonlocal failures
        if failures:
            failures -= 1
            future: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
            future.set_exception(redis.exceptions.ConnectionError("redis went away"))
            return future
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(SchedulerClient, "progress_soon", flaky)
    lost = await agent.send(TaskProgress(task_id=task_id, attempt=attempt, message="lost"))
    accept = await agent.send(TaskAccept(task_id=task_id, attempt=attempt))
    await agent.send(TaskProgress(task_id=task_id, attempt=attempt, message="applied"))
    again = await agent.send(TaskAccept(task_id=task_id, attempt=attempt))

    first = await agent.recv_type("ack", "error")
    assert first.type == "error", first
    assert payload(first)["ref"] == lost
    assert payload(first)["error"] == "service_unavailable"
    assert payload(await agent.recv_type("ack", "error")) == {"ref": accept}
    # The repeated accept is answered after the task's progress before it was applied (one chain per task).
    assert payload(await agent.recv_type("ack", "error")) == {"ref": again, "duplicate": True}
    assert failures == 0
    messages = [
        msgspec.json.decode(e.payload_json).get("message")
        for e in await stack.scheduler.history(task_id)
        if e.type == "task/progress"
    ]
    assert messages == ["applied"]
