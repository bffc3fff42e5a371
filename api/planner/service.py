"""Reads of one user's planner rows, and the sessions created on first use. Never shows another user's row:
a foreign id is `NotFoundError`, the same as an unknown one (admins included: the planner is personal)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from api.db.base import utcnow
from api.db.models.planner import PlannerMessage, PlannerSession, PlannerStep, PlannerTask
from api.errors import NotFoundError, ValidationFailedError
from api.planner.schemas import MessageListOut, TaskListOut, TaskWithSession
from api.planner.views import message_view, session_view, task_detail, task_view

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ("MAX_ID", "TASK_STATUSES", "PlannerService", "parse_id")

MAX_ID = 2**53 - 1
TASK_STATUSES = ("todo", "in_progress", "done", "cancelled")


def parse_id(text: str, what: str = "not found") -> int:
    """A path id: decimal digits within the JSON-safe range, else 404 (a malformed id names nothing)."""
    if not text.isascii() or not text.isdigit() or len(text) > 16 or not 1 <= int(text) <= MAX_ID:
        raise NotFoundError(what)
    return int(text)


class PlannerService:
    """One per request: a database session. Writes here are only the sessions created on first use."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # --- tasks ----------------------------------------------------------------------------------

    async def owned_task(self, user_id: str, task_id: int) -> PlannerTask:
        task = await self._session.get(PlannerTask, task_id)
        if task is None or task.user_id != user_id:
            raise NotFoundError("task not found")
        return task

    async def steps_of(self, task_id: int) -> list[PlannerStep]:
        query = select(PlannerStep).where(PlannerStep.task_id == task_id).order_by(PlannerStep.order_index)
        return list((await self._session.scalars(query.order_by(PlannerStep.id))).all())

    async def list_tasks(self, user_id: str, *, status: str | None, limit: int, offset: int) -> TaskListOut:
        where = [PlannerTask.user_id == user_id]
        if status is not None:
            if status not in TASK_STATUSES:
                raise ValidationFailedError(f"status must be one of {', '.join(TASK_STATUSES)}", {"field": "status"})
            where.append(PlannerTask.status == status)
        total = int(await self._session.scalar(select(func.count()).select_from(PlannerTask).where(*where)) or 0)
        query = (
            select(PlannerTask)
            .where(*where)
            .order_by(PlannerTask.created_at.desc(), PlannerTask.id.desc())
            .limit(limit)
            .offset(offset)
        )
        rows = (await self._session.scalars(query)).all()
        return TaskListOut(tasks=[task_view(t) for t in rows], total=total)

    async def task_with_session(self, user_id: str, task_id: int) -> TaskWithSession:
        task = await self.owned_task(user_id, task_id)
        session = await self.default_session(user_id, task.id)
        return TaskWithSession(task=task_detail(task, await self.steps_of(task.id)), session=session_view(session))

    # --- sessions -------------------------------------------------------------------------------

    async def default_session(self, user_id: str, task_id: int | None) -> PlannerSession:
        """The task's default session, or the user's global one (task_id None); created and committed if missing.

        `INSERT ... ON CONFLICT DO NOTHING` on the unique `default_key`: concurrent first uses create one session
        and nobody's transaction is rolled back (a rollback would expire the rows the caller holds).
        """
        key = f"task:{task_id}" if task_id is not None else f"global:{user_id}"
        query = select(PlannerSession).where(PlannerSession.default_key == key)
        found = await self._session.scalar(query)
        if found is not None:
            return found
        insert = sqlite.insert if self._session.get_bind().dialect.name == "sqlite" else postgresql.insert
        values = {
            "user_id": user_id,
            "task_id": task_id,
            "type": "task" if task_id is not None else "global",
            "default_key": key,
            "created_at": utcnow(),
        }
        await self._session.execute(insert(PlannerSession).values(values).on_conflict_do_nothing())
        await self._session.commit()
        created = await self._session.scalar(query)
        if created is None:  # unreachable: the row exists, ours or a concurrent request's
            raise NotFoundError("session not found")
        return created

    async def owned_session(self, user_id: str, session_id: int) -> PlannerSession:
        session = await self._session.get(PlannerSession, session_id)
        if session is None or session.user_id != user_id:
            raise NotFoundError("session not found")
        return session

    async def messages(
        self, user_id: str, session_id: int, *, limit: int, before: dt.datetime | None
    ) -> MessageListOut:
        """The newest `limit` messages (before `before` when given), oldest first."""
        session = await self.owned_session(user_id, session_id)
        query = select(PlannerMessage).where(PlannerMessage.session_id == session.id)
        if before is not None:
            query = query.where(PlannerMessage.created_at < before)
        query = query.order_by(PlannerMessage.created_at.desc(), PlannerMessage.id.desc()).limit(limit)
        rows = list((await self._session.scalars(query)).all())
        rows.reverse()
        return MessageListOut(session_id=session.id, messages=[message_view(m) for m in rows])
