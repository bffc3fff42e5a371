"""What every agent socket of one process shares: the frame lanes, and how a refused frame is answered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import redis.exceptions
from sqlalchemy.exc import SQLAlchemyError

from protocol.errors import ErrorCode
from protocol.messages import ErrorFrame
from scheduler.types import Outcome

__all__ = ("MAX_AWAITING_COMMIT", "MAX_PROGRESS_IN_FLIGHT", "REFUSALS", "TRANSIENT", "FrameLanes", "Lane", "refusal")

MAX_AWAITING_COMMIT = 4096
"""Result/error frames of this process in flight at once; the writer commits what gathers in one batch."""
MAX_PROGRESS_IN_FLIGHT = 1024
"""Progress frames of this process in flight at once; those of one loop turn share one script call."""


class Lane(asyncio.Semaphore):
    """A semaphore a callback can take a slot of without awaiting (when one is free at once)."""

    def try_acquire(self) -> bool:
        """What `acquire()` does when it need not wait: take a slot if one is free and nobody queues for it."""
        # `locked()` scans the waiters with a generator on every call; with no waiter a free slot is enough.
        if (self._waiters or self._value <= 0) and self.locked():
            return False
        self._value -= 1
        return True


@dataclass(frozen=True, slots=True)
class FrameLanes:
    """How many agent frames this process handles at once, shared by all its agent sockets.

    Process-wide on purpose: the Redis and database pools are per process, and a per-socket bound
    times many busy agents exhausts them (the Redis pool then refuses heartbeats and accepts too).
    Two lanes, so an accept (Redis only, with a deadline) never waits behind commits. Result and error
    frames take the slow lane only for their Redis step; their commit wait counts against `commits`,
    so every outcome waiting at once can share one batched transaction (`api.tasks.result_writer`).
    """

    fast: asyncio.Semaphore
    """Accept and stream frames (a Redis script each)."""
    slow: asyncio.Semaphore
    """The Redis step of result and error frames (their commit wait is outside it)."""
    commits: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_AWAITING_COMMIT))
    """Result and error frames in progress, most of them waiting for the process' batched commit."""
    progress: Lane = field(default_factory=lambda: Lane(MAX_PROGRESS_IN_FLIGHT))
    """Progress frames in flight. Wider than `fast` because a turn's frames share one script call (as
    outcomes share a commit), so it bounds frames, not round trips; a frame that finds a slot free and its
    task idle joins that call from the reader, with no handler task."""

    @classmethod
    def of(cls, limit: int) -> FrameLanes:
        return cls(fast=asyncio.Semaphore(max(1, limit)), slow=asyncio.Semaphore(max(1, limit)))


REFUSALS: dict[Outcome, ErrorCode] = {
    Outcome.STALE_ATTEMPT: ErrorCode.STALE_ATTEMPT,
    Outcome.NOT_ASSIGNED: ErrorCode.NOT_ASSIGNED,
    Outcome.NOT_FOUND: ErrorCode.NOT_FOUND,
    Outcome.TERMINAL: ErrorCode.TASK_NOT_RUNNABLE,
}
_REFUSAL_TEXT: dict[ErrorCode, str] = {
    ErrorCode.STALE_ATTEMPT: "this attempt is no longer current",
    ErrorCode.NOT_ASSIGNED: "the task is not assigned to this agent",
    ErrorCode.NOT_FOUND: "task not found",
    ErrorCode.TASK_NOT_RUNNABLE: "the task is already finished",
}
TRANSIENT = (redis.exceptions.RedisError, OSError, SQLAlchemyError)
"""Storage errors a frame handler reports to the agent (resend later) instead of closing the session."""


def refusal(code: ErrorCode, ref: str | None, task_id: str, attempt: int) -> ErrorFrame:
    return ErrorFrame.of(
        code, _REFUSAL_TEXT.get(code, "refused"), details={"taskId": task_id, "attempt": attempt}, ref=ref
    )
