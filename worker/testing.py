"""Run one handler with a recording context and no network: the SDK's test seam.

The input goes through the same JSON round trip and type check as on the wire, and the output through
the same encoding check, so a handler that passes here behaves the same under the runtime.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from worker.context import ProgressUpdate, TaskContext
from worker.errors import Fatal
from worker.execution import Failed, encode_output
from worker.registry import HandlerSpec, Registry
from worker.streaming import StreamPiece

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("RecordedProgress", "RecordedRun", "run_handler")

R = TypeVar("R")


class RecordedProgress(msgspec.Struct, frozen=True):
    """One progress report, decoded as a watcher would see it."""

    data: Any
    message: str | None


class RecordedRun(msgspec.Struct, frozen=True):
    """What one run produced.

    Attributes:
        output: the handler's return value, as returned.
        output_json: the same, decoded back from its wire encoding (what the server stores).
        progress: every progress report, in order.
        stream: the text the handler streamed with `ctx.stream()`.
        stream_pieces: that text as the `task/stream` pieces it went out in.
    """

    output: Any
    output_json: Any
    progress: list[RecordedProgress]
    stream: str = ""
    stream_pieces: list[StreamPiece] = msgspec.field(default_factory=list)


async def run_handler(
    handler: Callable[[Any, TaskContext[R]], Any] | HandlerSpec[R],
    input: Any,
    *,
    attempt: int = 1,
    resources: Any = None,
    task_id: str | None = None,
    task_type: str = "test",
    timeout_s: float | None = None,
    credentials: str | None = None,
) -> RecordedRun:
    """Run `handler` once on `input` and record what it did.

    Args:
        handler: a handler function, or a `HandlerSpec` taken from a `Registry`.
        input: the task input as JSON-compatible data (it is encoded, then decoded into the handler's
            declared input type, as the runtime does).
        attempt: the attempt number the context reports.
        resources: what `ctx.resources` holds.
        task_id: defaults to a random id.
        task_type: the type `ctx.type` reports.
        timeout_s: sets `ctx.deadline`.
        credentials: what `ctx.credentials` holds (sealed provider settings, as a trusted agent gets them).

    Returns:
        The output and the recorded progress.

    Raises:
        InputValidationError: the input does not match the handler's input type.
        Fatal: the output cannot go on the wire (not JSON, or over the size limit).
        Exception: whatever the handler raised (`Retry`, `Fatal`, or its own errors), unchanged.
    """
    spec = handler if isinstance(handler, HandlerSpec) else Registry[Any]().register(task_type, handler)
    recorded: list[RecordedProgress] = []

    def sink(update: ProgressUpdate) -> bool:
        data = msgspec.json.decode(update.data_json) if update.data_json is not None else None
        recorded.append(RecordedProgress(data=data, message=update.message))
        return True

    pieces: list[StreamPiece] = []

    async def stream_sink(piece: StreamPiece) -> None:
        pieces.append(piece)

    ctx: TaskContext[Any] = TaskContext(
        task_id=task_id or uuid.uuid4().hex,
        attempt=attempt,
        task_type=spec.type,
        resources=resources,
        sink=sink,
        loop=asyncio.get_running_loop(),
        timeout_s=timeout_s,
        stream_sink=stream_sink,
        credentials=credentials,
    )
    value = spec.decode_input(msgspec.json.encode(input))
    output = await spec.call(value, ctx)
    # No wait needed for reports a sync handler handed over from its thread: the loop runs callbacks in
    # order, and they were scheduled before the one that resolved the handler's future.
    encoded = encode_output(output)
    if isinstance(encoded, Failed):
        raise Fatal(encoded.message, error=encoded.error)
    return RecordedRun(
        output=output,
        output_json=msgspec.json.decode(encoded.output_json),
        progress=recorded,
        stream=ctx.streamed,
        stream_pieces=pieces,
    )
