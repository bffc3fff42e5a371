"""Tasks over REST and the result path for agents: one service object per request or agent frame.

Owns the `tasks` rows' life outside the recorder. Submission lives in `api/tasks/submit.py`, agent
outcomes in `api/tasks/outcomes.py`, the wire views in `api/tasks/views.py`; this module keeps the
reads and cancel, and hands the rest to those.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, cast

import redis.exceptions
from sqlalchemy import and_, bindparam, case, func, or_, select, update

from api.db.base import JsonColumn, utcnow
from api.db.models.tasks import Task
from api.db.session import AUTOCOMMIT
from api.errors import NotFoundError, ServiceUnavailableError, TaskNotRunnableError, ValidationFailedError
from api.tasks import history
from api.tasks.outcomes import Outcomes, Recorded
from api.tasks.submit import SubmitLimit, Submitter, TokenCaller
from api.tasks.views import spec_for, task_view
from protocol.status import TERMINAL_STATUSES, TaskStatus
from protocol.views import TaskPage

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.engine import CursorResult
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.auth.identity import CurrentUser
    from api.ratelimit import RateLimiter
    from api.tasks.result_writer import ResultWriter
    from api.tasks.schemas import TaskCreate
    from protocol.views import TaskView
    from scheduler.client import SchedulerClient

__all__ = (
    "HISTORY_LIMIT",
    "Recorded",
    "SubmitLimit",
    "Submitter",
    "TaskService",
    "TokenCaller",
    "spec_for",
    "task_view",
)

HISTORY_LIMIT = 1000
"""Most events `GET /api/tasks/{id}` returns (the newest ones)."""
_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


class TaskService:
    """One per request (or per agent frame): a database session and the scheduler client."""

    def __init__(
        self,
        session: AsyncSession,
        scheduler: SchedulerClient,
        *,
        limiter: RateLimiter | None = None,
        submit_limit: SubmitLimit | None = None,
        writer: ResultWriter | None = None,
        redis_lane: asyncio.Semaphore | None = None,
    ) -> None:
        """`writer`, `redis_lane`: see `Outcomes`; `limiter`, `submit_limit`: see `Submitter`."""
        self._session = session
        self._scheduler = scheduler
        self._limiter = limiter
        self._submit_limit = submit_limit
        self._writer = writer
        self._redis_lane = redis_lane

    # --- submission (api/tasks/submit.py) -------------------------------------------------------

    def _submitter(self) -> Submitter:
        return Submitter(self._session, self._scheduler, limiter=self._limiter, submit_limit=self._submit_limit)

    async def submit(
        self, caller: CurrentUser | TokenCaller, data: TaskCreate, header_key: str | None
    ) -> tuple[TaskView, bool]:
        """See `Submitter.submit`."""
        return await self._submitter().submit(caller, data, header_key)

    async def submit_batch(self, user: CurrentUser, items: list[TaskCreate]) -> tuple[list[TaskView], bool]:
        """See `Submitter.submit_batch`."""
        return await self._submitter().submit_batch(user, items)

    # --- reads ----------------------------------------------------------------------------------

    async def get_visible(self, user: CurrentUser, task_id: str) -> Task:
        """The task if `user` owns it (admins: any), else `NotFoundError` (same as an unknown id)."""
        task = await self._session.get(Task, task_id) if len(task_id) <= 64 else None
        if task is None or not (user.role == "admin" or task.owner_id == user.id):
            raise NotFoundError()
        return task

    async def _read_only(self) -> None:
        """Run a read that opens the request's session in autocommit: no BEGIN and ROLLBACK round trips
        around its statements (each sees its own committed snapshot, as under READ COMMITTED)."""
        if not self._session.in_transaction():
            await self._session.connection(execution_options=AUTOCOMMIT)

    async def detail(self, user: CurrentUser, task_id: str) -> TaskView:
        await self._read_only()
        task = await self.get_visible(user, task_id)
        events = await history.read_events(self._session, task, limit=HISTORY_LIMIT, newest=True)
        return task_view(task, events)

    async def list_page(
        self,
        user: CurrentUser,
        *,
        status: str | None,
        agent_id: str | None,
        type_: str | None,
        page: int,
        page_size: int,
    ) -> TaskPage:
        conditions = []
        if user.role != "admin":
            conditions.append(Task.owner_id == user.id)
        if status is not None:
            try:
                conditions.append(Task.status == str(TaskStatus(status)))
            except ValueError as exc:
                raise ValidationFailedError("unknown status", {"field": "status"}) from exc
        if agent_id is not None:
            conditions.append(or_(Task.agent_id == agent_id, Task.assigned_agent_id == agent_id))
        if type_ is not None:
            conditions.append(Task.type == type_)
        where = and_(*conditions) if conditions else None
        count = select(func.count()).select_from(Task)
        if where is not None:
            count = count.where(where)
        # One statement: the page with the total beside each row (a page past the end asks the count alone).
        query = select(Task, count.correlate(None).scalar_subquery()).order_by(Task.created_at.desc(), Task.id.desc())
        if where is not None:
            query = query.where(where)
        await self._read_only()
        rows = (await self._session.execute(query.limit(page_size).offset((page - 1) * page_size))).all()
        total = int(rows[0][1]) if rows else 0
        if not rows and page > 1:
            total = int((await self._session.execute(count)).scalar_one())
        return TaskPage(items=[task_view(row[0]) for row in rows], total=total, page=page, page_size=page_size)

    # --- cancel ---------------------------------------------------------------------------------

    async def cancel(self, user: CurrentUser, task_id: str) -> Task:
        """Cancel in Redis first (it decides against dispatch, atomically), then record it here.

        The caller commits (with its audit row). A task Redis does not know (never enqueued after a
        crash, or Redis lost it) is canceled in the database alone; the reconciler skips it then.
        """
        task = await self.get_visible(user, task_id)
        if task.status in _TERMINAL:
            raise TaskNotRunnableError(f"task is already {task.status}", {"status": task.status})
        await self._cancel_row(task, reason="canceled")
        return task

    async def cancel_pinned_to(self, agent_id: str) -> int:
        """Cancel the unfinished tasks pinned to a deleted agent: nobody else may ever run them.

        The caller commits. Returns how many were canceled.
        """
        rows = await self._session.scalars(
            select(Task).where(Task.agent_id == agent_id, Task.status.not_in(_TERMINAL)).order_by(Task.id)
        )
        canceled = 0
        for task in rows.all():
            with contextlib.suppress(TaskNotRunnableError):  # finished meanwhile
                await self._cancel_row(task, reason="agent_deleted")
                canceled += 1
        return canceled

    async def _cancel_row(self, task: Task, *, reason: str) -> None:
        try:
            result = await self._scheduler.cancel(task.id, reason=reason)
        except _REDIS_ERRORS as exc:
            raise ServiceUnavailableError("the queue is unavailable, retry later") from exc
        if result.outcome == "terminal":
            raise TaskNotRunnableError("task already finished", {"status": task.status})
        seq = result.seq if result.outcome == "canceled" and result.seq else task.seq + 1
        now = utcnow()
        canceled = result.outcome == "canceled"
        change = history.entry(
            seq,
            str(TaskStatus.CANCELED),
            attempt=(result.attempt or 0) if canceled else task.attempt,
            agent_id=result.agent_id if canceled else None,
            data={"reason": reason},
            at=now,
        )
        # One UPDATE: the status and its history entry (the row lock orders it with the recorder).
        updated = await self._session.execute(
            update(Task)
            .where(
                Task.id == task.id,
                # An attempt's partial output may have made the row `canceled` first (without a seq):
                # the cancel still records its own status change then.
                or_(Task.status.not_in(_TERMINAL), and_(Task.status == str(TaskStatus.CANCELED), Task.seq < seq)),
            )
            .values(
                status=str(TaskStatus.CANCELED),
                seq=case((Task.seq < seq, seq), else_=Task.seq),
                finished_at=now,
                updated_at=now,
                history=history.json_append(Task.history, bindparam("b_change", [change], type_=JsonColumn)),
            )
        )
        if not canceled and cast("CursorResult[Any]", updated).rowcount:
            # No script finished it, so none counted it for /metrics.
            try:
                await self._scheduler.count_finished(str(TaskStatus.CANCELED))
            except _REDIS_ERRORS as exc:
                raise ServiceUnavailableError("the queue is unavailable, retry later") from exc
        await self._session.flush()
        await self._session.refresh(task)

    # --- results from agents (api/tasks/outcomes.py) ---------------------------------------------

    def _outcomes(self) -> Outcomes:
        return Outcomes(self._session, self._scheduler, writer=self._writer, redis_lane=self._redis_lane)

    async def record_result(self, task_id: str, attempt: int, agent_id: str, output: Any) -> Recorded:
        """See `Outcomes.record_result`."""
        return await self._outcomes().record_result(task_id, attempt, agent_id, output)

    async def record_failure(
        self,
        task_id: str,
        attempt: int,
        agent_id: str,
        *,
        error: str,
        message: str,
        retryable: bool,
        retry_delay_s: float | None,
    ) -> Recorded:
        """See `Outcomes.record_failure`."""
        return await self._outcomes().record_failure(
            task_id, attempt, agent_id, error=error, message=message, retryable=retryable, retry_delay_s=retry_delay_s
        )
