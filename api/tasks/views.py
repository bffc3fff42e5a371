"""A `tasks` row seen from outside: the wire view clients get and the spec the scheduler stores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec

from protocol.status import TaskStatus
from protocol.views import TaskErrorInfo, TaskEventView, TaskView
from scheduler.types import TaskSpec

if TYPE_CHECKING:
    import datetime as dt

    from api.db.models.tasks import Task, TaskEvent

__all__ = ("spec_for", "task_view")


def _ms(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def spec_for(task: Task, *, status: str | None = None, fresh: bool = False) -> TaskSpec:
    """The scheduler's view of a row.

    `fresh`: a task just submitted (seq 0, so the scheduler records its first status as event 1,
    the same event the row was written with). Otherwise the row's attempt and seq carry over, so
    fencing and event order continue. `status` overrides the row's (the rebuild requeues in-flight
    tasks).
    """
    return TaskSpec(
        task_id=task.id,
        owner_id=task.owner_id,
        type=task.type,
        input_json=msgspec.json.encode(task.input),
        priority=task.priority,
        agent_id=task.agent_id,
        capabilities=tuple(task.capabilities),
        timeout_s=task.timeout_s,
        max_attempts=task.max_attempts,
        run_at_ms=_ms(task.run_at),
        attempt=0 if fresh else task.attempt,
        seq=0 if fresh else task.seq,
        status=status or task.status,
    )


def _error_info(error: dict[str, Any] | None) -> TaskErrorInfo | None:
    if not error:
        return None
    return TaskErrorInfo(error=str(error.get("error", "error")), message=str(error.get("message", "")))


def task_view(task: Task, events: list[TaskEvent] | None = None) -> TaskView:
    """The wire view of a row; `events` only for the single-task GET."""
    return TaskView(
        id=task.id,
        type=task.type,
        status=TaskStatus(task.status),
        priority=task.priority,
        input=task.input,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        capabilities=list(task.capabilities),
        timeout_seconds=task.timeout_s,
        owner_id=task.owner_id,
        created_at=task.created_at,
        updated_at=task.updated_at,
        result=task.result,
        error=_error_info(task.error),
        agent_id=task.assigned_agent_id,
        pinned_agent_id=task.agent_id,
        run_at=task.run_at,
        idempotency_key=task.idempotency_key,
        started_at=task.started_at,
        finished_at=task.finished_at,
        events=None if events is None else [_event_view(e) for e in events],
    )


_EVENT_TYPES: dict[str, Literal["task/status", "task/progress", "task/stream"]] = {
    "task/progress": "task/progress",
    "task/stream": "task/stream",
}


def _event_view(event: TaskEvent) -> TaskEventView:
    return TaskEventView(
        seq=event.seq,
        type=_EVENT_TYPES.get(event.type, "task/status"),
        attempt=event.attempt,
        at=event.at,
        status=TaskStatus(event.status) if event.status else None,
        agent_id=event.agent_id,
        data=event.data,
    )
