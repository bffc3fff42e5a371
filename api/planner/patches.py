"""Apply an agent's task patches (seed 002 option B) inside the caller's transaction.

Each patch stands alone: a bad one is rejected with a reason and the others still apply. A patch naming a task
the user does not own is rejected exactly like one naming no task (`task_not_found`), so the answer does not
reveal other users' ids. Task rows are locked (id order) before their steps change, so two replies editing one
task at once cannot interleave their renumbering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import select

from api.db.models.planner import PlannerStep, PlannerTask
from api.planner.schemas import RejectedPatch

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession

    from protocol.planner import AddStep, ReorderSteps, StepFields, TaskFields, TaskPatch

__all__ = ("MAX_STEPS_PER_TASK", "PatchOutcome", "apply_patches")

MAX_STEPS_PER_TASK = 200
"""What `planner.reply` input can carry for one task (protocol.planner.TaskState)."""

_TEXT: dict[str, str] = {
    "task_not_found": "no such task",
    "step_not_found": "no such step in this task",
    "step_ids_mismatch": "stepIds must list every step of the task exactly once",
    "too_many_steps": f"a task has at most {MAX_STEPS_PER_TASK} steps",
    "invalid_schedule": "plannedEnd is before plannedStart",
}


class _Rejected(Exception):  # noqa: N818 - internal control flow
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class PatchOutcome:
    applied: list[TaskPatch] = field(default_factory=list)
    rejected: list[RejectedPatch] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """The user's tasks the patches name, with their steps in order, as this transaction changes them."""

    tasks: dict[int, PlannerTask]
    steps: dict[int, list[PlannerStep]]
    session: AsyncSession
    now: dt.datetime


def _set_fields(target: Any, fields: msgspec.Struct) -> None:
    for name in fields.__struct_fields__:
        value = getattr(fields, name)
        if value is msgspec.UNSET:
            continue
        # Stored and answered in UTC, whatever offset the agent wrote.
        setattr(target, name, value.astimezone(UTC) if isinstance(value, datetime) else value)


def _check_schedule(start: dt.datetime | None, end: dt.datetime | None) -> None:
    if start is not None and end is not None and end < start:
        raise _Rejected("invalid_schedule")


def _renumber(steps: list[PlannerStep], now: dt.datetime) -> None:
    for index, step in enumerate(steps, start=1):
        if step.order_index != index:
            step.order_index = index
            step.updated_at = now


def _step_of(plan: _Plan, task_id: int, step_id: int) -> PlannerStep:
    for step in plan.steps[task_id]:
        if step.id == step_id:
            return step
    raise _Rejected("step_not_found")


def _update_step(plan: _Plan, task_id: int, step_id: int, fields: StepFields) -> None:
    step = _step_of(plan, task_id, step_id)
    start = step.planned_start if fields.planned_start is msgspec.UNSET else fields.planned_start
    end = step.planned_end if fields.planned_end is msgspec.UNSET else fields.planned_end
    _check_schedule(start, end)
    _set_fields(step, fields)
    step.updated_at = plan.now


def _add_step(plan: _Plan, add: AddStep) -> None:
    steps = plan.steps[add.task_id]
    if len(steps) >= MAX_STEPS_PER_TASK:
        raise _Rejected("too_many_steps")
    new = add.step
    _check_schedule(new.planned_start, new.planned_end)
    start, end = (None if t is None else t.astimezone(UTC) for t in (new.planned_start, new.planned_end))
    position = min(add.order_index or len(steps) + 1, len(steps) + 1)
    step = PlannerStep(
        task_id=add.task_id,
        order_index=position,
        title=new.title,
        detail=new.detail,
        status=new.status,
        blocking_reason=None,
        estimate_minutes=new.estimate_minutes,
        planned_start=start,
        planned_end=end,
        created_at=plan.now,
        updated_at=plan.now,
    )
    plan.session.add(step)
    steps.insert(position - 1, step)
    _renumber(steps, plan.now)


async def _remove_step(plan: _Plan, task_id: int, step_id: int) -> None:
    step = _step_of(plan, task_id, step_id)
    plan.steps[task_id].remove(step)
    await plan.session.delete(step)
    _renumber(plan.steps[task_id], plan.now)


def _reorder(plan: _Plan, reorder: ReorderSteps) -> None:
    steps = plan.steps[reorder.task_id]
    by_id = {s.id: s for s in steps}
    if len(reorder.step_ids) != len(steps) or set(reorder.step_ids) != set(by_id):
        raise _Rejected("step_ids_mismatch")
    steps[:] = [by_id[i] for i in reorder.step_ids]
    _renumber(steps, plan.now)


def _update_task(plan: _Plan, task_id: int, fields: TaskFields) -> None:
    _set_fields(plan.tasks[task_id], fields)


async def _apply_one(plan: _Plan, patch: TaskPatch) -> None:
    if patch.task_id not in plan.tasks:
        raise _Rejected("task_not_found")
    if patch.update_step is not None:
        _update_step(plan, patch.update_step.task_id, patch.update_step.step_id, patch.update_step.fields)
    elif patch.add_step is not None:
        _add_step(plan, patch.add_step)
    elif patch.remove_step is not None:
        await _remove_step(plan, patch.remove_step.task_id, patch.remove_step.step_id)
    elif patch.reorder_steps is not None:
        _reorder(plan, patch.reorder_steps)
    elif patch.update_task is not None:
        _update_task(plan, patch.update_task.task_id, patch.update_task.fields)
    plan.tasks[patch.task_id].updated_at = plan.now


async def apply_patches(
    session: AsyncSession, user_id: str, patches: list[TaskPatch], now: dt.datetime
) -> PatchOutcome:
    """Apply what can be applied (the caller commits); the rest is listed with its reason."""
    outcome = PatchOutcome()
    if not patches:
        return outcome
    ids = sorted({p.task_id for p in patches})
    owned = select(PlannerTask).where(PlannerTask.id.in_(ids), PlannerTask.user_id == user_id)
    tasks = {t.id: t for t in (await session.scalars(owned.order_by(PlannerTask.id).with_for_update())).all()}
    steps: dict[int, list[PlannerStep]] = {task_id: [] for task_id in tasks}
    if tasks:
        query = select(PlannerStep).where(PlannerStep.task_id.in_(list(tasks)))
        for step in (await session.scalars(query.order_by(PlannerStep.order_index, PlannerStep.id))).all():
            steps[step.task_id].append(step)
    plan = _Plan(tasks=tasks, steps=steps, session=session, now=now)
    for patch in patches:
        try:
            await _apply_one(plan, patch)
        except _Rejected as rejected:
            reason: Any = rejected.reason
            outcome.rejected.append(RejectedPatch(patch=patch, reason=reason, message=_TEXT[rejected.reason]))
        else:
            outcome.applied.append(patch)
    await session.flush()
    return outcome
