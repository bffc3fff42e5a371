"""worker.testing.run_handler and the built-in task types, run through it (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from protocol.limits import MAX_PROGRESS_BYTES
from worker import Fatal, Retry, TaskContext, run_handler
from worker.builtins import PlannedFailureError, builtin_registry
from worker.errors import InputValidationError


class Doc(msgspec.Struct):
    words: list[str]


class Summary(msgspec.Struct):
    count: int


async def count_words(input: Doc, ctx: TaskContext[dict[str, int]]) -> Summary:
    for i, _ in enumerate(input.words):
        await ctx.progress({"done": i + 1}, message="counting")
    return Summary(count=len(input.words) * ctx.resources["factor"])


def sync_count(input: Doc, ctx: TaskContext[None]) -> int:
    ctx.progress_nowait(message="from a thread")
    return len(input.words)


async def test_run_handler_records_output_and_progress() -> None:
    run = await run_handler(count_words, {"words": ["a", "b"]}, resources={"factor": 10})
    assert run.output == Summary(count=20)
    assert run.output_json == {"count": 20}
    assert [(p.data, p.message) for p in run.progress] == [({"done": 1}, "counting"), ({"done": 2}, "counting")]


async def test_run_handler_runs_sync_handlers_in_a_thread() -> None:
    run = await run_handler(sync_count, {"words": ["a"]})
    assert run.output == 1
    assert [p.message for p in run.progress] == ["from a thread"]


async def test_run_handler_validates_input_like_the_runtime() -> None:
    with pytest.raises(InputValidationError):
        await run_handler(count_words, {"words": "not a list"})


async def test_run_handler_passes_control_flow_exceptions_through() -> None:
    async def again(input: Any, ctx: TaskContext[None]) -> None:
        raise Retry(delay_s=1)

    with pytest.raises(Retry):
        await run_handler(again, {})


async def test_oversized_progress_is_dropped_not_raised() -> None:
    async def chatty(input: Any, ctx: TaskContext[None]) -> bool:
        return await ctx.progress("x" * MAX_PROGRESS_BYTES)

    run = await run_handler(chatty, {})
    assert run.output is False
    assert run.progress == []


async def test_context_reports_attempt_and_deadline() -> None:
    async def describe(input: Any, ctx: TaskContext[None]) -> dict[str, Any]:
        remaining = ctx.remaining_s()
        return {"attempt": ctx.attempt, "deadline": ctx.deadline is not None, "remaining": 0 < (remaining or 0) <= 30}

    run = await run_handler(describe, {}, attempt=3, timeout_s=30)
    assert run.output == {"attempt": 3, "deadline": True, "remaining": True}


async def test_builtin_noop_and_echo() -> None:
    registry = builtin_registry()
    assert (await run_handler(registry.get("noop"), {"ignored": 1})).output == {}  # type: ignore[arg-type]
    assert (await run_handler(registry.get("echo"), {"a": [1, "b"]})).output == {"a": [1, "b"]}  # type: ignore[arg-type]


async def test_builtin_sleep_reports_progress() -> None:
    spec = builtin_registry().get("sleep")
    assert spec is not None
    run = await run_handler(spec, {"seconds": 0.05, "progressEvery": 0.01})
    assert run.output == {"sleptS": 0.05}
    assert run.progress
    assert run.progress[-1].data == {"elapsedS": 0.05, "totalS": 0.05}
    with pytest.raises(InputValidationError):
        await run_handler(spec, {"seconds": -1})


async def test_builtin_sleep_honours_cancel() -> None:
    spec = builtin_registry().get("sleep")
    assert spec is not None
    task = asyncio.create_task(run_handler(spec, {"seconds": 3600}))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_builtin_fail_until_attempt() -> None:
    spec = builtin_registry().get("fail")
    assert spec is not None
    with pytest.raises(PlannedFailureError):
        await run_handler(spec, {"failUntilAttempt": 2}, attempt=2)
    assert (await run_handler(spec, {"failUntilAttempt": 2}, attempt=3)).output == {"attempt": 3}
    with pytest.raises(Fatal):
        await run_handler(spec, {"failUntilAttempt": 1, "retryable": False}, attempt=1)


def test_crash_is_registered_only_when_enabled() -> None:
    assert "crash" not in builtin_registry()
    assert "crash" in builtin_registry(enable_crash=True)
