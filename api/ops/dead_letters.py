"""Dead letters: failed tasks nobody has dealt with yet, and the two ways to deal with one.

A retry submits a *new* task (new id, attempt 0) through the same path as `POST /api/tasks`, as the
failed task's owner, with the idempotency key `retry:<failed id>`: retrying the same dead letter twice,
or from two replicas at once, yields one new task. The failed task keeps its id, status and history;
the `dead_letters` row links it to the new one. Discarding only hides it from the list.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

import msgspec
from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError

from api.auth.identity import CurrentUser
from api.db.base import utcnow
from api.db.models.ops import DeadLetter
from api.db.models.tasks import Task
from api.db.models.users import User
from api.errors import ApiError, ConflictError
from api.tasks.schemas import TaskCreate
from api.tasks.service import task_view
from protocol.status import TaskStatus
from protocol.views import TaskView

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.tasks.service import TaskService

__all__ = ("DeadLetterPage", "DeadLetterService", "DeadLetterView", "RetryOutcome", "retry_key")

State = Literal["open", "retried", "discarded"]
_FAILED = str(TaskStatus.FAILED)


class DeadLetterView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """A failed task (with its last error in `task.error`) and what has been done with it."""

    task: TaskView
    state: State
    retry_task_id: str | None = None
    """The new task a retry submitted."""
    acted_at: dt.datetime | None = None


class DeadLetterPage(msgspec.Struct, rename="camel", kw_only=True):
    items: list[DeadLetterView]
    total: int
    page: int
    page_size: int


class RetryOutcome(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    task_id: str
    retry_task_id: str | None = None
    error: str | None = None
    """Why this one was not retried (bulk retry carries on with the rest)."""


def retry_key(task_id: str) -> str:
    return f"retry:{task_id}"


def _view(task: Task, row: DeadLetter | None) -> DeadLetterView:
    if row is None:
        return DeadLetterView(task=task_view(task), state="open")
    state: State = "retried" if row.state == "retried" else "discarded"
    return DeadLetterView(task=task_view(task), state=state, retry_task_id=row.retry_task_id, acted_at=row.at)


class DeadLetterService:
    """Per request: a session and the task service that submits retries."""

    def __init__(self, session: AsyncSession, tasks: TaskService) -> None:
        self._session = session
        self._tasks = tasks

    async def list_page(
        self, user: CurrentUser, *, state: State, type_: str | None, page: int, page_size: int
    ) -> DeadLetterPage:
        conditions = [Task.status == _FAILED]
        if not user.is_admin:
            conditions.append(Task.owner_id == user.id)
        if type_ is not None:
            conditions.append(Task.type == type_)
        if state == "open":
            conditions.append(DeadLetter.task_id.is_(None))
        else:
            conditions.append(DeadLetter.state == state)
        joined = select(Task, DeadLetter).outerjoin(DeadLetter, DeadLetter.task_id == Task.id).where(and_(*conditions))
        count = select(func.count()).select_from(joined.subquery())
        total = int((await self._session.execute(count)).scalar_one())
        query = joined.order_by(Task.finished_at.desc(), Task.id.desc()).limit(page_size).offset((page - 1) * page_size)
        rows = (await self._session.execute(query)).all()
        return DeadLetterPage(items=[_view(t, d) for t, d in rows], total=total, page=page, page_size=page_size)

    async def _failed_visible(self, user: CurrentUser, task_id: str) -> Task:
        task = await self._tasks.get_visible(user, task_id)
        if task.status != _FAILED:
            raise ConflictError("only a failed task is a dead letter", {"status": task.status})
        return task

    async def get(self, user: CurrentUser, task_id: str) -> DeadLetterView:
        task = await self._failed_visible(user, task_id)
        return _view(task, await self._session.get(DeadLetter, task.id))

    async def retry(self, user: CurrentUser, task_id: str) -> tuple[DeadLetterView, bool]:
        """Retry as a new linked task; returns the dead letter and whether the new task was created now."""
        task = await self._failed_visible(user, task_id)
        row = await self._session.get(DeadLetter, task.id)
        if row is not None and row.state == "discarded":
            raise ConflictError("this dead letter was discarded", {"state": "discarded"})
        owner = user if task.owner_id == user.id else await self._owner(task.owner_id)
        new_view, created = await self._tasks.submit(owner, _template(task), retry_key(task.id))
        if row is None:
            row = await self._record(task.id, "retried", new_view.id, user.id)
        # submit() committed; the link is written after it, so a crash in between is healed by retrying again.
        task = await self._failed_visible(user, task_id)
        return _view(task, row), created

    async def discard(self, user: CurrentUser, task_id: str) -> DeadLetterView:
        task = await self._failed_visible(user, task_id)
        row = await self._session.get(DeadLetter, task.id)
        if row is not None and row.state == "retried":
            raise ConflictError("this dead letter was already retried", {"retryTaskId": row.retry_task_id})
        if row is None:
            row = await self._record(task.id, "discarded", None, user.id)
        return _view(task, row)

    async def bulk_retry(self, admin: CurrentUser, type_: str, limit: int) -> list[RetryOutcome]:
        """Retry up to `limit` open dead letters of one type, oldest failure first; each one on its own."""
        open_ids = (
            select(Task.id)
            .outerjoin(DeadLetter, DeadLetter.task_id == Task.id)
            .where(Task.status == _FAILED, Task.type == type_, DeadLetter.task_id.is_(None))
            .order_by(Task.finished_at, Task.id)
            .limit(limit)
        )
        ids = list((await self._session.execute(open_ids)).scalars())
        outcomes: list[RetryOutcome] = []
        for task_id in ids:
            try:
                view, _ = await self.retry(admin, task_id)
            except ApiError as exc:
                await self._session.rollback()
                outcomes.append(RetryOutcome(task_id=task_id, error=exc.message))
                continue
            outcomes.append(RetryOutcome(task_id=task_id, retry_task_id=view.retry_task_id))
        return outcomes

    async def _owner(self, owner_id: str) -> CurrentUser:
        user = await self._session.get(User, owner_id)
        if user is None or not user.is_active:
            raise ConflictError("the task's owner is gone or disabled; it cannot be retried for them")
        # Only the id and role are read by the submit path; the token fields do not apply.
        return CurrentUser(id=user.id, email=user.email, name=user.name, role=user.role, jti="", token_exp=0)

    async def _record(self, task_id: str, state: str, retry_task_id: str | None, actor_id: str) -> DeadLetter:
        row = DeadLetter(task_id=task_id, state=state, retry_task_id=retry_task_id, actor_id=actor_id, at=utcnow())
        self._session.add(row)
        try:
            await self._session.commit()
        except IntegrityError:
            # Another request recorded this dead letter first: theirs stands.
            await self._session.rollback()
            existing = await self._session.get(DeadLetter, task_id)
            if existing is None:
                raise
            if existing.state != state:
                raise ConflictError(f"this dead letter was already {existing.state}") from None
            return existing
        return row


def _template(task: Task) -> TaskCreate:
    """The failed task's request again (no runAt: a retry runs now)."""
    return TaskCreate(
        type=task.type,
        input=task.input,
        priority=task.priority,
        agent_id=task.agent_id,
        capabilities=list(task.capabilities or []),
        timeout_seconds=task.timeout_s,
        max_attempts=task.max_attempts,
    )
