"""Rows of the planner tables -> the answer Structs of schemas.py. Pure functions, no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from api.planner.schemas import MessageView, PlannerTaskDetail, PlannerTaskView, SessionView, StepView

if TYPE_CHECKING:
    from api.db.models.planner import PlannerMessage, PlannerSession, PlannerStep, PlannerTask

__all__ = ("message_view", "session_view", "step_view", "task_detail", "task_view")


def step_view(step: PlannerStep) -> StepView:
    return StepView(
        id=step.id,
        task_id=step.task_id,
        order_index=step.order_index,
        title=step.title,
        detail=step.detail,
        status=cast("Any", step.status),
        blocking_reason=step.blocking_reason,
        estimate_minutes=step.estimate_minutes,
        planned_start=step.planned_start,
        planned_end=step.planned_end,
        created_at=step.created_at,
        updated_at=step.updated_at,
    )


def _task_fields(task: PlannerTask) -> dict[str, Any]:
    return {
        "id": task.id,
        "user_id": task.user_id,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "priority": task.priority,
        "due_at": task.due_at,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }


def task_view(task: PlannerTask) -> PlannerTaskView:
    return PlannerTaskView(**_task_fields(task))


def task_detail(task: PlannerTask, steps: list[PlannerStep]) -> PlannerTaskDetail:
    ordered = sorted(steps, key=lambda s: (s.order_index, s.id))
    return PlannerTaskDetail(**_task_fields(task), steps=[step_view(s) for s in ordered])


def session_view(session: PlannerSession) -> SessionView:
    return SessionView(
        id=session.id,
        user_id=session.user_id,
        task_id=session.task_id,
        type=cast("Any", session.type),
        created_at=session.created_at,
    )


def message_view(message: PlannerMessage) -> MessageView:
    return MessageView(
        id=message.id,
        session_id=message.session_id,
        role=cast("Any", message.role),
        agent_name=message.agent_name,
        content=message.content,
        created_at=message.created_at,
    )
