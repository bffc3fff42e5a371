"""The task-runner boundary: every way a handler can end, classified into a result or a task/error."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from protocol.limits import MAX_MESSAGE_LENGTH, MAX_TASK_OUTPUT_BYTES
from worker.context import ProgressUpdate, TaskContext
from worker.errors import Fatal, Retry
from worker.execution import Failed, Succeeded, error_name, execute
from worker.registry import Registry


class Numbers(msgspec.Struct):
    values: list[int]


def make_ctx(task_type: str = "t") -> TaskContext[None]:
    def sink(update: ProgressUpdate) -> bool:
        return True

    return TaskContext(
        task_id="task-1", attempt=1, task_type=task_type, resources=None, sink=sink, loop=asyncio.get_running_loop()
    )


async def run(fn: Any, input_json: bytes = b"{}", **kwargs: Any) -> Succeeded | Failed:
    spec = Registry[None]().register("t", fn, **kwargs)
    return await execute(spec, input_json, make_ctx())


async def test_output_is_encoded() -> None:
    async def total(input: Numbers, ctx: TaskContext[None]) -> Numbers:
        return Numbers(values=[sum(input.values)])

    assert await run(total, b'{"values": [1, 2, 3]}') == Succeeded(b'{"values":[6]}')


async def test_retry_is_retryable_with_its_delay() -> None:
    async def again(input: Any, ctx: TaskContext[None]) -> None:
        raise Retry(delay_s=2.5)

    assert await run(again) == Failed("retry", "retry requested", True, 2.5)


async def test_fatal_is_not_retryable() -> None:
    async def give_up(input: Any, ctx: TaskContext[None]) -> None:
        raise Fatal("no way", error="bad_document")

    assert await run(give_up) == Failed("bad_document", "no way", False)


async def test_other_exceptions_are_retryable_named_by_type_and_truncated() -> None:
    async def broken(input: Any, ctx: TaskContext[None]) -> None:
        raise KeyError("x" * 5000)

    outcome = await run(broken)
    assert isinstance(outcome, Failed)
    assert (outcome.error, outcome.retryable) == ("KeyError", True)
    assert len(outcome.message) == MAX_MESSAGE_LENGTH
    assert outcome.message.startswith("KeyError: ")


async def test_bad_input_is_a_non_retryable_validation_error() -> None:
    async def total(input: Numbers, ctx: TaskContext[None]) -> int:
        return sum(input.values)

    outcome = await run(total, b'{"values": ["a"]}')
    assert isinstance(outcome, Failed)
    assert (outcome.error, outcome.retryable) == ("validation_error", False)


async def test_unencodable_and_oversized_outputs_fail_without_retry() -> None:
    async def unencodable(input: Any, ctx: TaskContext[None]) -> object:
        return object()

    async def huge(input: Any, ctx: TaskContext[None]) -> str:
        return "x" * MAX_TASK_OUTPUT_BYTES

    first, second = await run(unencodable), await run(huge)
    assert isinstance(first, Failed)
    assert (first.error, first.retryable) == ("output_invalid", False)
    assert isinstance(second, Failed)
    assert (second.error, second.retryable) == ("payload_too_large", False)


async def test_missing_handler_is_retryable_unsupported_type() -> None:
    outcome = await execute(None, b"{}", make_ctx("llm.chat"))
    assert isinstance(outcome, Failed)
    assert (outcome.error, outcome.retryable) == ("unsupported_type", True)


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def forever(input: Any, ctx: TaskContext[None]) -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(run(forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_error_names_are_made_wire_safe() -> None:
    assert error_name("_PrivateError") == "PrivateError"
    assert error_name("___") == "handler_error"
    assert error_name("bad name!") == "bad_name_"
    assert len(error_name("E" * 100)) == 64
