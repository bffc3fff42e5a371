"""An agent's task frames on a real server, where a progress frame is applied from a callback (no handler task):
its refusal or storage error is answered by its ref, ahead of the next frame of its task, and the task's
later frames still run. A `batch` frame's progress items of idle tasks go to the scheduler as one group (one
future, one callback): the same answers, the same per-task order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

import msgspec
import pytest
import redis.exceptions

from api.ws import agent_chains
from protocol.envelope import encode_batch, encode_payload
from protocol.messages import Batch, TaskAccept, TaskProgress
from scheduler.client import SchedulerClient
from tests.integration.api.test_ws_batch import _batch_peer, _submits
from tests.integration.api.test_ws_liveness import SPARE_SLOTS
from tests.integration.api.test_ws_support import Peer, Stack, open_stack, payload, ws_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

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


async def _two_running(stack: Stack) -> tuple[Peer, dict[str, int]]:
    """A `batch` agent with two tasks submitted to it."""
    owner = await stack.person()
    agent_id, token = await stack.agent(owner, concurrency=2 + SPARE_SLOTS)
    task_ids = {await stack.submit(owner, agent_id=agent_id) for _ in range(2)}
    peer, _ = await _batch_peer(stack, agent_id, token)
    attempts, _ = await _submits(stack, peer, task_ids)
    return peer, attempts


async def _answers(peer: Peer, refs: set[str]) -> dict[str, str]:
    """The error answers (ref -> error name) that arrive within a short wait; progress that applied is silent."""
    errors: dict[str, str] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while set(errors) != refs:
                frame = await peer.recv_type("error", "batch")
                items = frame.payload.frames if isinstance(frame.payload, Batch) else None
                bodies = [payload(frame)] if items is None else [msgspec.json.decode(i.payload) for i in items]
                for body in bodies:
                    errors[body["ref"]] = body["error"]
    return errors


async def _messages(stack: Stack, task_id: str, want: list[str]) -> list[str]:
    """The task's progress messages once they are `want` (or whatever they are after a short wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0
    while True:
        history = await stack.scheduler.history(task_id)
        got = [msgspec.json.decode(e.payload_json).get("message") for e in history if e.type == "task/progress"]
        if got == want or loop.time() > deadline:
            return got
        await asyncio.sleep(0.02)


def _progress_batch(items: Sequence[tuple[str, int, str]]) -> tuple[list[str], str]:
    """A `batch` frame of progress items (task id, attempt, message): their ids, and the frame."""
    refs = [str(uuid.uuid4()) for _ in items]
    bodies = [encode_payload(TaskProgress(task_id=t, attempt=a, message=m)) for t, a, m in items]
    frame = encode_batch([("task/progress", body, ref) for ref, body in zip(refs, bodies, strict=True)])
    return refs, frame.decode()


async def test_a_batch_frames_progress_goes_as_one_group_with_each_answer_and_order_kept(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer, attempts = await _two_running(stack)
    (one, a1), (two, a2) = sorted(attempts.items())
    groups: list[int] = []
    original = SchedulerClient.progress_many

    def counted(self: SchedulerClient, frames: Sequence[tuple[str, int, str, bytes]]) -> asyncio.Future[list[Applied]]:
        groups.append(len(frames))
        return original(self, frames)

    monkeypatch.setattr(SchedulerClient, "progress_many", counted)
    refs, frame = _progress_batch(
        [(one, a1, "a"), (two, a2, "x"), (one, a1 + 1, "stale"), (one, a1, "b"), (two, a2, "y")]
    )
    await peer.send_raw(frame)

    assert await _answers(peer, {refs[2]}) == {refs[2]: "stale_attempt"}
    assert await _messages(stack, one, ["a", "b"]) == ["a", "b"]
    assert await _messages(stack, two, ["x", "y"]) == ["x", "y"]
    # The idle tasks' first items in one group, then the next item of each (their chains) in another; "b" goes
    # after the refusal's answer, from the handler that sends it.
    assert groups == [2, 2]


async def test_a_group_lost_to_a_storage_error_answers_each_item_and_its_tasks_go_on(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer, attempts = await _two_running(stack)
    (one, a1), (two, a2) = sorted(attempts.items())
    original = SchedulerClient.progress_many
    failures = 1

    def flaky(self: SchedulerClient, frames: Sequence[tuple[str, int, str, bytes]]) -> asyncio.Future[list[Applied]]:
        nonlocal failures
        if failures:
            failures -= 1
            future: asyncio.Future[list[Applied]] = asyncio.get_running_loop().create_future()
            future.set_exception(redis.exceptions.ConnectionError("redis went away"))
            return future
        return original(self, frames)

    monkeypatch.setattr(SchedulerClient, "progress_many", flaky)
    refs, frame = _progress_batch([(one, a1, "lost"), (two, a2, "lost too"), (one, a1, "kept")])
    await peer.send_raw(frame)

    assert await _answers(peer, set(refs[:2])) == {refs[0]: "service_unavailable", refs[1]: "service_unavailable"}
    assert failures == 0
    assert await _messages(stack, one, ["kept"]) == ["kept"]
    assert await _messages(stack, two, []) == []


async def test_a_group_over_its_bound_is_cut_into_calls_in_order(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    peer, attempts = await _two_running(stack)
    (one, a1), (two, a2) = sorted(attempts.items())
    groups: list[list[str]] = []
    original = SchedulerClient.progress_many

    def counted(self: SchedulerClient, frames: Sequence[tuple[str, int, str, bytes]]) -> asyncio.Future[list[Applied]]:
        groups.append([frame[0] for frame in frames])
        return original(self, frames)

    monkeypatch.setattr(SchedulerClient, "progress_many", counted)
    monkeypatch.setattr(agent_chains, "MAX_GROUP", 1)
    _, frame = _progress_batch([(one, a1, "a"), (two, a2, "x"), (one, a1, "b")])
    await peer.send_raw(frame)

    assert await _messages(stack, one, ["a", "b"]) == ["a", "b"]
    assert await _messages(stack, two, ["x"]) == ["x"]
    assert groups == [[one], [two], [one]]
