"""Task statuses and the one table of allowed transitions.

Pure data: nothing here changes a task; the scheduler's scripts and the recorder consult it.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "ACTIVE_STATUSES",
    "ALLOWED_TRANSITIONS",
    "TERMINAL_STATUSES",
    "TaskStatus",
    "can_transition",
    "is_terminal",
)


class TaskStatus(enum.StrEnum):
    """Where a task is in its life. The value is the wire string."""

    SCHEDULED = "scheduled"
    """Waiting for a time: a future `runAt`, or a retry backoff."""
    QUEUED = "queued"
    """In a priority queue, waiting for an agent with a free slot."""
    ASSIGNED = "assigned"
    """In an agent's inbox, not yet accepted."""
    RUNNING = "running"
    """Accepted by the agent."""
    DONE = "done"
    """Finished with a result (terminal)."""
    FAILED = "failed"
    """Finished with an error and no attempts left, or not retryable (terminal)."""
    CANCELED = "canceled"
    """Canceled by its owner or an admin (terminal)."""


TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED})
"""Statuses that are never left."""

ACTIVE_STATUSES: frozenset[TaskStatus] = frozenset(TaskStatus) - TERMINAL_STATUSES
"""Every status that is not terminal: the task still needs the scheduler."""

# Why each edge exists:
#   scheduled -> queued      its time came (runAt, or the retry backoff ran out)
#   queued -> assigned       dispatched to an agent (attempt += 1)
#   assigned -> running      the agent accepted
#   assigned|running -> queued     agent lost, or timed out with attempts left
#   assigned|running -> scheduled  task/error, retryable, with attempts left (backoff)
#   assigned|running -> done       result (an agent may answer without a separate accept)
#   assigned|running -> failed     task/error with no attempts left or not retryable; timeout on the last attempt
#   any active -> canceled          cancel
ALLOWED_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = MappingProxyType(
    {
        TaskStatus.SCHEDULED: frozenset({TaskStatus.QUEUED, TaskStatus.CANCELED}),
        TaskStatus.QUEUED: frozenset({TaskStatus.ASSIGNED, TaskStatus.CANCELED}),
        TaskStatus.ASSIGNED: frozenset(
            {
                TaskStatus.RUNNING,
                TaskStatus.QUEUED,
                TaskStatus.SCHEDULED,
                TaskStatus.DONE,
                TaskStatus.FAILED,
                TaskStatus.CANCELED,
            }
        ),
        TaskStatus.RUNNING: frozenset(
            {TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED}
        ),
        TaskStatus.DONE: frozenset(),
        TaskStatus.FAILED: frozenset(),
        TaskStatus.CANCELED: frozenset(),
    }
)
"""For each status, the statuses it may move to. Terminal statuses map to the empty set."""


def is_terminal(status: TaskStatus | str) -> bool:
    """Return True when `status` is terminal (done, failed, canceled).

    Raises:
        ValueError: `status` is not a known status string.
    """
    return TaskStatus(status) in TERMINAL_STATUSES


def can_transition(current: TaskStatus | str, new: TaskStatus | str) -> bool:
    """Return True when a task may move from `current` to `new`.

    Raises:
        ValueError: either argument is not a known status string.
    """
    return TaskStatus(new) in ALLOWED_TRANSITIONS[TaskStatus(current)]
