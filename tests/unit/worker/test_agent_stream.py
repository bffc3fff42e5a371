"""`ctx.stream()` through the agent runtime against a real WebSocket peer: offsets, order with the result,
the whole stream resent after a reconnect, a gap resumed where the server says, and the partial result of a
canceled attempt."""

from __future__ import annotations

import asyncio
from typing import Any

from protocol.errors import ErrorCode
from protocol.messages import ErrorFrame, TaskCancel, TaskError, TaskResult, TaskStream
from tests.unit.worker.fake_api import WAIT_S, FakeApi
from tests.unit.worker.test_agent import make_settings, running
from worker import Agent, Registry, TaskContext


def _pieces(api: FakeApi, task_id: str, conn: int | None = None) -> list[TaskStream]:
    return [
        r.frame.payload
        for r in api.frames("task/stream", task_id)
        if isinstance(r.frame.payload, TaskStream) and (conn is None or r.conn == conn)
    ]


def streaming_registry(release: asyncio.Event, words: list[str]) -> Registry[Any]:
    registry: Registry[Any] = Registry()

    @registry.handler("words")
    async def stream_words(input: Any, ctx: TaskContext[Any]) -> dict[str, str]:
        try:
            for index, word in enumerate(words):
                await ctx.stream(word)
                if index == 1:
                    await release.wait()
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise
            return {"text": ctx.streamed, "finishReason": "canceled"}  # partial output on cancel
        return {"text": ctx.streamed}

    return registry


async def test_pieces_carry_byte_offsets_and_precede_the_result() -> None:
    release = asyncio.Event()
    release.set()
    async with FakeApi() as api:
        async with running(Agent(make_settings(api), streaming_registry(release, ["Hé", "llo ", "世界"]))):
            await api.submit("t1", "words")
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
    assert [(p.offset, p.delta) for p in _pieces(api, "t1")] == [(0, "Hé"), (3, "llo "), (7, "世界")]
    assert api.task_types("t1") == ["task/accept", "task/stream", "task/stream", "task/stream", "task/result"]
    result = api.frames("task/result", "t1")[0].frame.payload
    assert isinstance(result, TaskResult)
    assert result.output == {"text": "Héllo 世界"}


async def test_after_a_reconnect_the_whole_stream_is_resent_from_offset_zero_before_the_result() -> None:
    release = asyncio.Event()
    async with FakeApi() as api:
        async with running(Agent(make_settings(api), streaming_registry(release, ["one ", "two ", "three"]))):
            await api.submit("t1", "words")
            await api.wait_for(lambda: len(_pieces(api, "t1")) == 2)
            await api.drop()
            await api.wait_for(lambda: api.connections == 2 and len(_pieces(api, "t1", conn=2)) >= 1)
            release.set()
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
    again = _pieces(api, "t1", conn=2)
    assert [(p.offset, p.delta) for p in again] == [(0, "one two "), (8, "three")]
    second = [r.frame.type for r in api.frames(task_id="t1") if r.conn == 2]
    assert second.index("task/result") > max(i for i, t in enumerate(second) if t == "task/stream")


async def test_a_gap_is_resent_from_the_offset_the_server_expects() -> None:
    release = asyncio.Event()
    async with FakeApi() as api:
        async with running(Agent(make_settings(api), streaming_registry(release, ["abc", "déf", "ghi"]))):
            await api.submit("t1", "words")
            await api.wait_for(lambda: len(_pieces(api, "t1")) == 2)
            second = api.frames("task/stream", "t1")[1]
            gap = ErrorCode.STREAM_GAP
            await api.send(
                ErrorFrame.of(
                    gap, "gap", details={"expectedOffset": 3, "taskId": "t1", "attempt": 1}, ref=second.frame.id
                )
            )
            await api.wait_for(lambda: len(_pieces(api, "t1")) == 3)
            release.set()
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
    assert [(p.offset, p.delta) for p in _pieces(api, "t1")] == [(0, "abc"), (3, "déf"), (3, "déf"), (7, "ghi")]


async def test_server_cancel_sends_the_partial_output_the_handler_returns() -> None:
    release = asyncio.Event()
    async with FakeApi() as api:
        async with running(Agent(make_settings(api), streaming_registry(release, ["half ", "an ", "answer"]))):
            await api.submit("t1", "words")
            await api.wait_for(lambda: len(_pieces(api, "t1")) == 2)
            await api.send(TaskCancel(task_id="t1", attempt=1, reason="canceled"))
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
    result = api.frames("task/result", "t1")[0].frame.payload
    assert isinstance(result, TaskResult)
    assert result.output == {"text": "half an ", "finishReason": "canceled"}
    assert not api.frames("task/error", "t1")


async def test_shutdown_hands_the_task_back_even_when_the_handler_returns_partial_output() -> None:
    release = asyncio.Event()
    async with FakeApi() as api:
        agent = Agent(make_settings(api, drain_timeout_s=0.2), streaming_registry(release, ["a", "b", "c"]))
        task = asyncio.create_task(agent.run())
        await api.submit("t1", "words")
        await api.wait_for(lambda: len(_pieces(api, "t1")) == 2)
        agent.stop()
        await api.wait_for(lambda: bool(api.frames("task/error", "t1")))
        await asyncio.wait_for(task, WAIT_S)
    error = api.frames("task/error", "t1")[0].frame.payload
    assert isinstance(error, TaskError)
    assert (error.error, error.retryable) == ("worker_shutdown", True)
    assert not api.frames("task/result", "t1")
