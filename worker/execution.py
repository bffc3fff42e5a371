"""Runs one handler and turns whatever happens into an outcome: a result, or an error report.

This is the task runner boundary: the one place a handler's exception is caught and classified.
Cancellation is not an outcome; `asyncio.CancelledError` passes through to the runtime.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from protocol.limits import MAX_ERROR_CODE_LENGTH, MAX_MESSAGE_LENGTH, MAX_TASK_OUTPUT_BYTES
from worker.errors import Fatal, InputValidationError, Retry

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.registry import HandlerSpec

__all__ = (
    "ERROR_OUTPUT_INVALID",
    "ERROR_OUTPUT_TOO_LARGE",
    "ERROR_RETRY",
    "ERROR_UNSUPPORTED_TYPE",
    "ERROR_VALIDATION",
    "ERROR_WORKER_SHUTDOWN",
    "Failed",
    "Outcome",
    "Succeeded",
    "error_name",
    "execute",
    "truncate_message",
)

logger = logging.getLogger(__name__)

R = TypeVar("R")

ERROR_VALIDATION = "validation_error"
"""The input does not match the handler's declared type (not retryable)."""
ERROR_UNSUPPORTED_TYPE = "unsupported_type"
"""This worker has no handler for the task's type (retryable: another agent may have one)."""
ERROR_RETRY = "retry"
"""The handler raised `Retry`."""
ERROR_OUTPUT_INVALID = "output_invalid"
"""The handler returned something that is not JSON-encodable (not retryable)."""
ERROR_OUTPUT_TOO_LARGE = "payload_too_large"
"""The encoded output is over the protocol's result limit (not retryable)."""
ERROR_WORKER_SHUTDOWN = "worker_shutdown"
"""The worker stopped before the task finished and handed it back (retryable)."""

_RESULT_OVERHEAD_BYTES = 512
"""Room left in `MAX_TASK_OUTPUT_BYTES` for the result payload's other fields."""
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9._:/-]")


class Succeeded(msgspec.Struct, frozen=True):
    """The handler returned; `output_json` is its encoded output."""

    output_json: bytes


class Failed(msgspec.Struct, frozen=True):
    """The task failed; the fields map one to one onto `task/error`."""

    error: str
    message: str
    retryable: bool
    retry_delay_s: float | None = None


Outcome = Succeeded | Failed


def error_name(name: str, *, fallback: str = "handler_error") -> str:
    """Make `name` a valid wire error name (letters, digits, `._:/-`, starting alphanumeric, bounded)."""
    cleaned = _NOT_NAME_CHARS.sub("_", name).lstrip("._:/-")[:MAX_ERROR_CODE_LENGTH]
    return cleaned or fallback


def truncate_message(message: str) -> str:
    """Bound a message to the protocol's limit, marking the cut."""
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - 3] + "..."


def encode_output(value: Any) -> Outcome:
    """Encode a handler's return value, refusing what the wire cannot carry."""
    try:
        output_json = msgspec.json.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        return Failed(ERROR_OUTPUT_INVALID, truncate_message(f"output is not JSON-encodable: {exc}"), False)
    if len(output_json) > MAX_TASK_OUTPUT_BYTES - _RESULT_OVERHEAD_BYTES:
        message = f"output is {len(output_json)} bytes, over the {MAX_TASK_OUTPUT_BYTES} byte limit"
        return Failed(ERROR_OUTPUT_TOO_LARGE, message, False)
    return Succeeded(output_json)


async def execute(spec: HandlerSpec[R] | None, input_json: bytes, ctx: TaskContext[R]) -> Outcome:
    """Decode the input, run the handler and classify the result.

    `Retry` -> retryable error `retry` (with its delay); `Fatal` -> non-retryable error; a bad input ->
    non-retryable `validation_error`; any other exception -> retryable error named after its type, with a
    truncated message. Cancellation propagates.
    """
    if spec is None:
        return Failed(ERROR_UNSUPPORTED_TYPE, f"no handler for task type {ctx.type!r} on this worker", True)
    try:
        value = spec.decode_input(input_json)
    except InputValidationError as exc:
        return Failed(ERROR_VALIDATION, truncate_message(f"invalid input: {exc}"), False)
    try:
        result = await spec.call(value, ctx)
    except Retry as exc:
        return Failed(error_name(exc.error, fallback=ERROR_RETRY), truncate_message(exc.message), True, exc.delay_s)
    except Fatal as exc:
        return Failed(error_name(exc.error, fallback="fatal"), truncate_message(exc.message), False)
    except Exception as exc:  # the task-runner boundary: any handler bug becomes a retryable task/error
        logger.warning(
            "handler raised %s",
            type(exc).__name__,
            exc_info=True,
            extra={"task_id": ctx.task_id, "attempt": ctx.attempt, "task_type": ctx.type},
        )
        return Failed(error_name(type(exc).__name__), truncate_message(f"{type(exc).__name__}: {exc}"), True)
    return encode_output(result)
