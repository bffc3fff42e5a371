"""The LLM-backed routes: each request becomes a job plus an ordinary scheduler task owned by the user (submitted
through the tasks service, so it is queued, placed, retried, recorded and watchable like any other), then the
request waits for it with a bound. Done: apply and answer. Failed: 502. Too slow: 504 naming the job, whose
result is still stored when the task ends (apply.py; the background applier or `GET /jobs/{id}`).

No database transaction is held while waiting: every step opens a short one of its own.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec
from sqlalchemy import select

from api.db.base import utcnow
from api.db.models.planner import PlannerJob, PlannerMessage, PlannerSession, PlannerTask
from api.errors import ApiError, BadRequestError, NotFoundError, RateLimitedError
from api.planner.apply import apply_job, job_task
from api.planner.context import reply_input
from api.planner.errors import PlannerTimeoutError, UpstreamFailedError
from api.planner.schemas import (
    MIN_RAW_TEXT_CHARS,
    JobError,
    JobOut,
    JobView,
    RejectedPatch,
    ReplyOut,
    TaskWithSession,
)
from api.planner.service import PlannerService
from api.planner.views import message_view, session_view, task_detail
from api.tasks.schemas import TaskCreate
from api.tasks.service import TaskService
from protocol.planner import PLANNER_FROM_TEXT, PLANNER_REPLY, PlanFromTextInput, TaskPatch

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.auth.identity import CurrentUser
    from api.planner.waiter import TaskWaiter
    from api.ratelimit import RateLimiter
    from api.settings import PlannerSettings
    from scheduler.client import SchedulerClient

__all__ = ("RATE_BUCKET", "PlannerJobs", "job_location")

logger = logging.getLogger(__name__)

RATE_BUCKET = "planner_llm"


def job_location(job_id: str) -> str:
    return f"/api/planner/jobs/{job_id}"


@dataclass(frozen=True, slots=True)
class PlannerJobs:
    """Process-wide; every method opens its own short database sessions."""

    db: async_sessionmaker[AsyncSession]
    scheduler: SchedulerClient
    limiter: RateLimiter
    waiter: TaskWaiter
    settings: PlannerSettings

    # --- POST /tasks/from-text ----------------------------------------------------------------------

    async def from_text(self, user: CurrentUser, raw_text: str) -> TaskWithSession:
        text = raw_text.strip()
        if len(text) < MIN_RAW_TEXT_CHARS:
            raise BadRequestError(
                f"rawText is required (at least {MIN_RAW_TEXT_CHARS} characters)", {"field": "rawText"}
            )
        await self._count(user)
        job = await self._new_job(user.id, "from_text", session_id=None)
        payload = PlanFromTextInput(raw_text=text, now=utcnow())
        task_id = await self._submit(user, job, PLANNER_FROM_TEXT, msgspec.to_builtins(payload))
        done = await self._settle(job, task_id)
        async with self.db() as session:
            return await _from_text_body(session, done)

    # --- POST /sessions/{id}/messages ---------------------------------------------------------------

    async def reply(self, user: CurrentUser, session_id: int, content: str) -> ReplyOut:
        text = content.strip()
        async with self.db() as session:
            chat = await PlannerService(session).owned_session(user.id, session_id)
        if not text:
            raise BadRequestError("content is required", {"field": "content"})
        await self._count(user)
        async with self.db() as session:
            # The user's message and the job together: the job exists before its task can emit an event.
            now = utcnow()
            message = PlannerMessage(session_id=chat.id, role="user", agent_name=None, content=text, created_at=now)
            session.add(message)
            job = self._job_row(user.id, "reply", session_id=chat.id)
            session.add(job)
            await session.commit()
            task_input = await reply_input(session, user.id, chat, message, now)
        task_id = await self._submit(user, job, PLANNER_REPLY, task_input)
        done = await self._settle(job, task_id)
        async with self.db() as session:
            return await _reply_body(session, done)

    # --- GET /jobs/{id} ---------------------------------------------------------------------------

    async def job(self, user_id: str, job_id: str) -> JobOut:
        """A job of this user, applied first if its task has ended meanwhile."""
        try:
            job_id = str(uuid.UUID(job_id))
        except ValueError:
            raise NotFoundError("job not found") from None
        async with self.db() as session:
            job = await session.get(PlannerJob, job_id)
            if job is None or job.user_id != user_id:
                raise NotFoundError("job not found")
        job = await apply_job(self.db, job_id) or job
        async with self.db() as session:
            task = await job_task(session, job)
            view = JobView(
                id=job.id,
                kind=cast("Any", job.kind),
                status=cast("Any", job.state),
                task_id=task.id if task is not None else None,
                created_at=job.created_at,
                finished_at=job.finished_at if job.state in ("done", "failed") else None,
                error=JobError(**job.error) if job.error else None,
            )
            from_text = await _from_text_body(session, job) if job.state == "done" and job.kind == "from_text" else None
            reply = await _reply_body(session, job) if job.state == "done" and job.kind == "reply" else None
        return JobOut(job=view, from_text=from_text, reply=reply)

    # --- steps ------------------------------------------------------------------------------------

    async def _count(self, user: CurrentUser) -> None:
        decision = await self.limiter.hit(
            RATE_BUCKET, user.id, limit=self.settings.planner_llm_per_user, window_s=self.settings.planner_llm_window_s
        )
        if not decision.allowed:
            raise RateLimitedError(decision.retry_after_s)

    @staticmethod
    def _job_row(user_id: str, kind: str, *, session_id: int | None) -> PlannerJob:
        job_id = str(uuid.uuid4())
        return PlannerJob(
            id=job_id,
            user_id=user_id,
            kind=kind,
            task_key=f"planner:{job_id}",
            session_id=session_id,
            state="pending",
            created_at=utcnow(),
        )

    async def _new_job(self, user_id: str, kind: str, *, session_id: int | None) -> PlannerJob:
        job = self._job_row(user_id, kind, session_id=session_id)
        async with self.db() as session:
            session.add(job)
            await session.commit()
        return job

    async def _submit(self, user: CurrentUser, job: PlannerJob, task_type: str, task_input: Any) -> str:
        settings = self.settings
        data = TaskCreate(
            type=task_type,
            input=task_input,
            priority=settings.planner_task_priority,
            capabilities=list(settings.planner_capabilities),
            timeout_seconds=settings.planner_task_timeout_s,
            max_attempts=settings.planner_task_max_attempts,
            idempotency_key=job.task_key,
        )
        try:
            async with self.db() as session:
                view, _ = await TaskService(session, self.scheduler).submit(user, data, None)
        except ApiError as exc:
            await self._give_up(job.id, exc.code.error, exc.message)
            raise
        logger.info("planner job submitted job_id=%s kind=%s task_id=%s", job.id, job.kind, view.id)
        return view.id

    async def _give_up(self, job_id: str, error: str, message: str) -> None:
        async with self.db() as session:
            job = await session.get(PlannerJob, job_id)
            if job is not None and job.state == "pending":
                job.state, job.finished_at = "failed", utcnow()
                job.error = {"error": error, "message": message}
                await session.commit()

    async def _settle(self, job: PlannerJob, task_id: str) -> PlannerJob:
        """Wait for the task within the bound, then apply it: the applied job, or 502 / 504."""
        if await self.waiter.wait(task_id, self.settings.planner_wait_s):
            applied = await apply_job(self.db, job.id)
            if applied is not None and applied.state == "done":
                return applied
            if applied is not None and applied.state == "failed":
                error = applied.error or {}
                name, message = str(error.get("error", "failed")), str(error.get("message", ""))
                text = f"the LLM task failed ({name})" + (f": {message}" if message and message != name else "")
                raise UpstreamFailedError(text, {"jobId": job.id, "taskId": task_id, "error": name})
        location = job_location(job.id)
        logger.info("planner job past the wait bound job_id=%s task_id=%s", job.id, task_id)
        raise PlannerTimeoutError(
            f"the planner is still working; its result will be stored: GET {location}",
            {"jobId": job.id, "taskId": task_id, "location": location},
        )


async def _from_text_body(session: AsyncSession, job: PlannerJob) -> TaskWithSession:
    result = job.result or {}
    task = await session.get(PlannerTask, int(result.get("taskId", 0)))
    chat = await session.get(PlannerSession, int(result.get("sessionId", 0)))
    if task is None or chat is None:
        raise NotFoundError("the planner task no longer exists")
    steps = await PlannerService(session).steps_of(task.id)
    return TaskWithSession(task=task_detail(task, steps), session=session_view(chat))


async def _reply_body(session: AsyncSession, job: PlannerJob) -> ReplyOut:
    result = job.result or {}
    message = await session.scalar(select(PlannerMessage).where(PlannerMessage.id == int(result.get("messageId", 0))))
    if message is None:
        raise NotFoundError("the reply no longer exists")
    applied = msgspec.json.decode(msgspec.json.encode(result.get("applied", [])), type=list[TaskPatch])
    rejected = msgspec.json.decode(msgspec.json.encode(result.get("rejected", [])), type=list[RejectedPatch])
    return ReplyOut(
        session_id=message.session_id,
        assistant_message=message_view(message),
        task_patches=applied,
        rejected_patches=rejected,
    )
