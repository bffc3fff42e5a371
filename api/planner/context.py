"""What a `planner.reply` task is given: the new message, the session's task with its steps (task sessions) or
the user's open tasks (global sessions), and the recent messages, trimmed to fit the task input limit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import msgspec
from sqlalchemy import select

from api.db.models.planner import PlannerMessage, PlannerStep, PlannerTask
from protocol.limits import MAX_TASK_INPUT_BYTES
from protocol.planner import PlannerReplyInput, SessionMessage, StepState, TaskState

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession

    from api.db.models.planner import PlannerSession

__all__ = ("MAX_OPEN_TASKS", "RECENT_MESSAGES", "reply_input")

RECENT_MESSAGES = 20
MAX_OPEN_TASKS = 100
_BUDGET = int(MAX_TASK_INPUT_BYTES * 0.9)
"""Room left for the envelope; the tasks service refuses inputs over MAX_TASK_INPUT_BYTES (413)."""


def _state(task: PlannerTask, steps: list[PlannerStep]) -> TaskState:
    return TaskState(
        id=task.id,
        title=task.title,
        description=task.description,
        status=cast("Any", task.status),
        priority=cast("Any", task.priority),
        due_at=task.due_at,
        steps=[
            StepState(
                id=s.id,
                order_index=s.order_index,
                title=s.title,
                detail=s.detail,
                status=cast("Any", s.status),
                blocking_reason=s.blocking_reason,
                estimate_minutes=s.estimate_minutes,
                planned_start=s.planned_start,
                planned_end=s.planned_end,
            )
            for s in steps[:200]
        ],
    )


async def _steps_by_task(session: AsyncSession, task_ids: list[int]) -> dict[int, list[PlannerStep]]:
    found: dict[int, list[PlannerStep]] = {i: [] for i in task_ids}
    if task_ids:
        query = select(PlannerStep).where(PlannerStep.task_id.in_(task_ids))
        for step in (await session.scalars(query.order_by(PlannerStep.order_index, PlannerStep.id))).all():
            found[step.task_id].append(step)
    return found


async def _recent(session: AsyncSession, chat_id: int, before_id: int) -> list[SessionMessage]:
    query = (
        select(PlannerMessage)
        .where(PlannerMessage.session_id == chat_id, PlannerMessage.id < before_id)
        .order_by(PlannerMessage.id.desc())
        .limit(RECENT_MESSAGES)
    )
    rows = list((await session.scalars(query)).all())
    rows.reverse()
    return [SessionMessage(role=cast("Any", m.role), content=m.content[:20_000], agent_name=m.agent_name) for m in rows]


def _fit(data: PlannerReplyInput) -> PlannerReplyInput:
    """Drop context, least useful first, until the input fits: old messages, the open tasks' steps, then tasks."""
    while len(msgspec.json.encode(data)) > _BUDGET:
        if len(data.messages) > 4:
            data = msgspec.structs.replace(data, messages=data.messages[len(data.messages) // 2 :])
        elif any(t.steps for t in data.tasks):
            data = msgspec.structs.replace(data, tasks=[msgspec.structs.replace(t, steps=[]) for t in data.tasks])
        elif len(data.tasks) > 1:
            data = msgspec.structs.replace(data, tasks=data.tasks[: len(data.tasks) // 2])
        elif data.messages:
            data = msgspec.structs.replace(data, messages=data.messages[1:])
        elif data.task is not None and len(data.task.steps) > 1:
            data = msgspec.structs.replace(data, task=msgspec.structs.replace(data.task, steps=data.task.steps[:50]))
        else:
            break
    return data


async def reply_input(
    session: AsyncSession, user_id: str, chat: PlannerSession, message: PlannerMessage, now: dt.datetime
) -> dict[str, Any]:
    """The `planner.reply` input for the user's new `message` in `chat`, as JSON-ready builtins."""
    messages = await _recent(session, chat.id, message.id)
    task: TaskState | None = None
    tasks: list[TaskState] = []
    if chat.type == "task" and chat.task_id is not None:
        row = await session.get(PlannerTask, chat.task_id)
        if row is not None:
            task = _state(row, (await _steps_by_task(session, [row.id]))[row.id])
    else:
        query = (
            select(PlannerTask)
            .where(PlannerTask.user_id == user_id, PlannerTask.status.in_(("todo", "in_progress")))
            .order_by(PlannerTask.updated_at.desc(), PlannerTask.id.desc())
            .limit(MAX_OPEN_TASKS)
        )
        rows = list((await session.scalars(query)).all())
        steps = await _steps_by_task(session, [t.id for t in rows])
        tasks = [_state(t, steps[t.id]) for t in rows]
    data = PlannerReplyInput(
        session_type="task" if chat.type == "task" else "global",
        content=message.content,
        now=now,
        task=task,
        tasks=tasks,
        messages=messages,
    )
    return cast("dict[str, Any]", msgspec.to_builtins(_fit(data)))
