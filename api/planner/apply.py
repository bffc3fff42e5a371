"""Turn a finished planner task into planner rows, exactly once, from any API replica.

A job is applied by whoever gets there first: the request that waited for it, the background applier (after a
504), or a `GET /jobs/{id}`. The transaction starts by moving the job out of `pending` with a conditional UPDATE,
so a second applier waits for the first to commit and then finds nothing to do (on SQLite the UPDATE also takes
the write lock before anything is read, so no stale snapshot is ever upgraded).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import and_, exists, select, update

from api.db.base import utcnow
from api.db.models.planner import PlannerJob, PlannerMessage, PlannerSession, PlannerStep, PlannerTask
from api.db.models.tasks import Task
from api.planner.patches import apply_patches
from protocol.planner import PlanFromTextOutput, PlannerReplyOutput
from protocol.status import TERMINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ("apply_job", "expire_stale_jobs", "finished_job_ids", "job_task")

logger = logging.getLogger(__name__)

_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


class _UnusableError(Exception):
    """The task finished but its output does not decode as the task type's output."""


def _task_of(job: PlannerJob) -> Any:
    return select(Task).where(Task.owner_id == job.user_id, Task.idempotency_key == job.task_key)


async def job_task(session: AsyncSession, job: PlannerJob) -> Task | None:
    """The scheduler task doing the job's work (None until it is submitted)."""
    task: Task | None = await session.scalar(_task_of(job))
    return task


def _finished(task: Task | None) -> bool:
    """Terminal, with its outcome written (a `done` row gets its result a moment after its status)."""
    if task is None or task.status not in _TERMINAL:
        return False
    return task.status != TaskStatus.DONE or task.result is not None


def _decode(output: Any, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(msgspec.json.encode(output), type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise _UnusableError from exc


def _system_message(task: Task, steps: int) -> str:
    raw = task.input.get("rawText", "") if isinstance(task.input, dict) else ""
    if _CJK.search(str(raw)):
        return f"已为你根据文本创建任务，并拆分为 {steps} 个步骤。"  # noqa: RUF001 - Chinese punctuation
    return f"Created this task from your text, with {steps} step{'s' if steps != 1 else ''}."


async def _apply_from_text(session: AsyncSession, job: PlannerJob, task: Task, now: dt.datetime) -> dict[str, Any]:
    plan: PlanFromTextOutput = _decode(task.result, PlanFromTextOutput)
    row = PlannerTask(
        user_id=job.user_id,
        title=plan.title,
        description=plan.description,
        status="todo",
        priority=plan.priority,
        due_at=plan.due_at,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    for index, step in enumerate(plan.steps, start=1):
        session.add(
            PlannerStep(
                task_id=row.id,
                order_index=index,
                title=step.title,
                detail=step.detail,
                status=step.status,
                blocking_reason=None,
                estimate_minutes=step.estimate_minutes,
                planned_start=step.planned_start,
                planned_end=step.planned_end,
                created_at=now,
                updated_at=now,
            )
        )
    key = f"task:{row.id}"
    chat = PlannerSession(user_id=job.user_id, task_id=row.id, type="task", default_key=key, created_at=now)
    session.add(chat)
    await session.flush()
    content = _system_message(task, len(plan.steps))
    session.add(PlannerMessage(session_id=chat.id, role="system", agent_name="system", content=content, created_at=now))
    return {"taskId": row.id, "sessionId": chat.id}


async def _apply_reply(session: AsyncSession, job: PlannerJob, task: Task, now: dt.datetime) -> dict[str, Any]:
    reply: PlannerReplyOutput = _decode(task.result, PlannerReplyOutput)
    outcome = await apply_patches(session, job.user_id, reply.patches, now)
    message = PlannerMessage(
        session_id=job.session_id, role="assistant", agent_name=reply.agent_name, content=reply.content, created_at=now
    )
    session.add(message)
    await session.flush()
    return {
        "sessionId": job.session_id,
        "messageId": message.id,
        "applied": msgspec.to_builtins(outcome.applied),
        "rejected": msgspec.to_builtins(outcome.rejected),
    }


def _failure(task: Task) -> dict[str, str]:
    if task.status == TaskStatus.CANCELED:
        return {"error": "canceled", "message": "the planner task was canceled"}
    error = task.error or {}
    name = str(error.get("error") or "failed")[:64]
    message = str(error.get("message") or "the LLM task failed")[:500]
    return {"error": name, "message": message}


async def apply_job(db: async_sessionmaker[AsyncSession], job_id: str) -> PlannerJob | None:
    """Apply the job if its task has finished; returns the job as it is now (None for an unknown id)."""
    async with db() as session:
        job = await session.get(PlannerJob, job_id)
        if job is None or job.state != "pending" or not _finished(await job_task(session, job)):
            return job
    async with db() as session:
        now = utcnow()
        claim = await session.execute(
            update(PlannerJob)
            .where(PlannerJob.id == job_id, PlannerJob.state == "pending")
            .values(state="applying", finished_at=now)
        )
        if getattr(claim, "rowcount", 0) != 1:
            await session.rollback()
            return await session.get(PlannerJob, job_id)
        job = await session.get(PlannerJob, job_id, populate_existing=True)
        task = await job_task(session, job) if job is not None else None
        if job is None or task is None:  # unreachable: both were read above and rows are never deleted alone
            await session.rollback()
            return job
        state, result, error = await _outcome(session, job, task, now)
        job.state, job.result, job.error = state, result, error
        await session.commit()
    logger.info("planner job applied job_id=%s kind=%s state=%s task_id=%s", job.id, job.kind, state, task.id)
    return job


async def _outcome(
    session: AsyncSession, job: PlannerJob, task: Task, now: dt.datetime
) -> tuple[str, dict[str, Any] | None, dict[str, str] | None]:
    if task.status != TaskStatus.DONE:
        return "failed", None, _failure(task)
    try:  # the output is decoded before anything is written
        if job.kind == "from_text":
            return "done", await _apply_from_text(session, job, task, now), None
        return "done", await _apply_reply(session, job, task, now), None
    except _UnusableError:
        logger.warning("planner job output unusable job_id=%s task_id=%s", job.id, task.id)
        return "failed", None, {"error": "invalid_output", "message": "the planner agent returned an unusable answer"}


async def finished_job_ids(session: AsyncSession, *, limit: int) -> list[str]:
    """Pending jobs whose task has ended (oldest first): what the background applier applies."""
    query = (
        select(PlannerJob.id)
        .join(Task, and_(Task.owner_id == PlannerJob.user_id, Task.idempotency_key == PlannerJob.task_key))
        .where(PlannerJob.state == "pending", Task.status.in_(_TERMINAL))
        .order_by(PlannerJob.created_at)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def expire_stale_jobs(session: AsyncSession, *, older_than: dt.datetime) -> int:
    """Fail pending jobs whose task never appeared (the process died between the job and the submit)."""
    no_task = ~exists().where(Task.owner_id == PlannerJob.user_id, Task.idempotency_key == PlannerJob.task_key)
    result = await session.execute(
        update(PlannerJob)
        .where(PlannerJob.state == "pending", PlannerJob.created_at < older_than, no_task)
        .values(
            state="failed",
            finished_at=utcnow(),
            error={"error": "not_submitted", "message": "the planner task was never submitted"},
        )
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
