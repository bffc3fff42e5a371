"""What the agent keeps about one attempt, and how it reads the server's refusals of its frames."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from protocol.errors import ErrorCode
from worker.execution import ERROR_WORKER_SHUTDOWN, Failed

if TYPE_CHECKING:
    import asyncio

    from protocol.messages import TaskSubmit
    from worker.context import TaskContext
    from worker.outbox import TaskKey

__all__ = (
    "FENCED_ERRORS",
    "RETRY_LATER_ERRORS",
    "STREAM_RESUME_ERRORS",
    "CancelReason",
    "Finished",
    "Job",
    "handed_back",
)

CancelReason = Literal["server", "fenced", "shutdown"]

FENCED_ERRORS = frozenset(
    {
        ErrorCode.STALE_ATTEMPT.error,
        ErrorCode.NOT_ASSIGNED.error,
        ErrorCode.TASK_NOT_RUNNABLE.error,
        ErrorCode.NOT_FOUND.error,
    }
)
"""The server no longer wants this attempt from us (superseded, reassigned, finished, or gone): drop its
frames and stop running it."""
RETRY_LATER_ERRORS = frozenset(
    {
        ErrorCode.INTERNAL_ERROR.error,
        ErrorCode.SERVICE_UNAVAILABLE.error,
        ErrorCode.RATE_LIMITED.error,
        ErrorCode.GATEWAY_TIMEOUT.error,
        ErrorCode.UPSTREAM_ERROR.error,
    }
)
"""The server could not apply the frame now: keep it, the resender tries again."""
STREAM_RESUME_ERRORS = frozenset({ErrorCode.STREAM_GAP.error, ErrorCode.VALIDATION_ERROR.error})
"""A stream piece the server could not place (`details.expectedOffset` says where it is): resend from there."""
FINISHED_MEMORY = 65536
"""How many finished attempts are remembered to ignore redelivered submits."""


@dataclass(eq=False, slots=True)
class Job:
    submit: TaskSubmit
    task: asyncio.Task[None] | None = None
    ctx: TaskContext[Any] | None = None
    is_running: bool = False
    cancel_reason: CancelReason | None = None
    reported: bool = False
    """Some frame of this attempt went out (accept, progress, stream or outcome): the server knows it runs."""
    accept_timer: asyncio.TimerHandle | None = None

    @property
    def key(self) -> TaskKey:
        return (self.submit.task_id, self.submit.attempt)

    def log_extra(self, agent_id: str) -> dict[str, Any]:
        return {"task_id": self.submit.task_id, "attempt": self.submit.attempt, "agent_id": agent_id}


@dataclass(slots=True)
class Finished:
    """Recently finished attempts (bounded), so a redelivered submit is not run twice."""

    keys: OrderedDict[TaskKey, None] = field(default_factory=OrderedDict)

    def add(self, key: TaskKey) -> None:
        self.keys[key] = None
        while len(self.keys) > FINISHED_MEMORY:
            self.keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self.keys


def handed_back() -> Failed:
    return Failed(ERROR_WORKER_SHUTDOWN, "the worker shut down before the task finished", True, 0.0)
