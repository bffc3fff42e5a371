"""Built-in task types for tests, the dev stack and benchmarks: noop, echo, sleep, fail, crash.

`crash` kills the process (`os._exit(1)`) and is only registered when asked for (fault tests).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated, Any

import msgspec

from worker.context import TaskContext  # noqa: TC001 - get_type_hints() resolves handler annotations at run time
from worker.errors import Fatal
from worker.registry import Registry

__all__ = ("FailInput", "PlannedFailureError", "SleepInput", "builtin_registry")

_MAX_SLEEP_S = 7 * 24 * 3600.0


class SleepInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """Input of `sleep`."""

    seconds: Annotated[float, msgspec.Meta(ge=0, le=_MAX_SLEEP_S)]
    """How long to sleep."""
    progress_every: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Emit a progress report this often (seconds); none when absent."""


class FailInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """Input of `fail`."""

    fail_until_attempt: Annotated[int, msgspec.Meta(ge=0)] = 1
    """Fail while `attempt <= failUntilAttempt`, then succeed."""
    retryable: bool = True
    """False: fail with a non-retryable error (`Fatal`) instead."""


class PlannedFailureError(Exception):
    """Raised by `fail` on purpose."""


async def noop(input: Any, ctx: TaskContext[Any]) -> dict[str, Any]:
    """Return `{}` at once."""
    return {}


async def echo(input: Any, ctx: TaskContext[Any]) -> Any:
    """Return the input unchanged."""
    return input


async def sleep(input: SleepInput, ctx: TaskContext[Any]) -> dict[str, float]:
    """Sleep `seconds`, reporting progress every `progressEvery` seconds; a cancel interrupts the sleep."""
    started = time.monotonic()
    deadline = started + input.seconds
    step = input.progress_every
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, step) if step else left)
        if step:
            elapsed = min(time.monotonic() - started, input.seconds)
            await ctx.progress({"elapsedS": round(elapsed, 3), "totalS": input.seconds})
    return {"sleptS": input.seconds}


async def fail(input: FailInput, ctx: TaskContext[Any]) -> dict[str, int]:
    """Fail while `attempt <= failUntilAttempt`, else return `{"attempt": attempt}`."""
    if ctx.attempt <= input.fail_until_attempt:
        message = f"planned failure on attempt {ctx.attempt} (until {input.fail_until_attempt})"
        if not input.retryable:
            raise Fatal(message, error="planned_failure")
        raise PlannedFailureError(message)
    return {"attempt": ctx.attempt}


def crash(input: Any, ctx: TaskContext[Any]) -> None:
    """Kill the worker process at once, without cleanup (fault tests: the poison pill)."""
    os._exit(1)


def builtin_registry(*, enable_crash: bool = False) -> Registry[Any]:
    """A registry with noop, echo, sleep and fail; plus crash when `enable_crash`."""
    registry: Registry[Any] = Registry()
    registry.register("noop", noop)
    registry.register("echo", echo)
    registry.register("sleep", sleep)
    registry.register("fail", fail)
    if enable_crash:
        registry.register("crash", crash)
    return registry
