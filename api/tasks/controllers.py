"""`/api/tasks`: submit (one or a batch), read, list, cancel. Thin: parse, call the service, answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api import audit
from api.auth.guards import claims_of, requires_token, requires_user
from api.errors import request_id_of
from api.http.outages import dependency_error_handlers
from api.tasks.schemas import IdempotencyKey, TaskBatchCreate, TaskBatchOut, TaskCreate
from api.tasks.service import SubmitLimit, Submitter, TaskService, TokenCaller
from protocol.limits import MAX_TYPE_LENGTH
from protocol.views import TaskPage, TaskView  # noqa: TC001 - Litestar resolves handler hints at runtime

if TYPE_CHECKING:
    from litestar.datastructures import State

    from api.auth.identity import CurrentUser

__all__ = ("TaskController",)

MAX_PAGE_SIZE = 100


def _user(request: Request[Any, Any, Any]) -> CurrentUser:
    user: CurrentUser = request.user
    return user


def _submit_limit(state: State) -> SubmitLimit:
    limits = state.settings.ratelimit
    return SubmitLimit(limits.task_submit_per_user, limits.task_submit_window_s)


def _service(request: Request[Any, Any, Any], db_session: AsyncSession) -> TaskService:
    state = request.app.state
    return TaskService(db_session, state.scheduler, limiter=state.auth.limiter, submit_limit=_submit_limit(state))


def _submitter(request: Request[Any, Any, Any]) -> Submitter:
    """No request session: a keyless single submit's row goes through the process' `SubmitGroup` (an
    INSERT on a pooled driver connection), and the submitter opens a session only where it needs one."""
    state = request.app.state
    return Submitter(
        None,
        state.scheduler,
        limiter=state.auth.limiter,
        submit_limit=_submit_limit(state),
        sessions=state.db,
        group=state.submit_group,
    )


TaskIdParam = Annotated[str, Parameter(max_length=64)]


class TaskController(Controller):
    path = "/api/tasks"
    tags = ["tasks"]
    exception_handlers = dependency_error_handlers()

    # The single submit finishes the token check itself: with its rate-limit hit in one Redis round trip.
    @post("/", status_code=HTTP_201_CREATED, guards=[requires_token])
    async def submit(
        self,
        request: Request[Any, Any, Any],
        data: TaskCreate,
        idempotency_key: Annotated[IdempotencyKey | None, Parameter(header="Idempotency-Key")] = None,
    ) -> Response[TaskView]:
        """Submit a task. 201 when created; 200 with the first task when the idempotency key is replayed."""
        caller = TokenCaller(request.app.state, claims_of(request))
        view, created = await _submitter(request).submit(caller, data, idempotency_key)
        return Response(view, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @post("/batch", status_code=HTTP_201_CREATED, guards=[requires_user])
    async def submit_batch(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, data: TaskBatchCreate
    ) -> Response[TaskBatchOut]:
        """Submit up to 500 tasks in one transaction: all are validated first, none is created on error."""
        views, created = await _service(request, db_session).submit_batch(_user(request), data.tasks)
        return Response(TaskBatchOut(items=views), status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get("/", status_code=HTTP_200_OK, guards=[requires_user])
    async def list_tasks(
        self,
        *,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        status: Annotated[str | None, Parameter(max_length=16)] = None,
        agent_id: Annotated[str | None, Parameter(query="agentId", max_length=64)] = None,
        task_type: Annotated[str | None, Parameter(query="type", max_length=MAX_TYPE_LENGTH)] = None,
        page: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Parameter(query="pageSize", ge=1, le=MAX_PAGE_SIZE)] = 20,
    ) -> TaskPage:
        """Newest first. Users see their own tasks; admins see all."""
        return await _service(request, db_session).list_page(
            _user(request), status=status, agent_id=agent_id, type_=task_type, page=page, page_size=page_size
        )

    @get("/{task_id:str}", status_code=HTTP_200_OK, guards=[requires_user])
    async def get_task(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, task_id: TaskIdParam
    ) -> TaskView:
        """The task with its recorded history (`events`, oldest first)."""
        return await _service(request, db_session).detail(_user(request), task_id)

    @post("/{task_id:str}/cancel", status_code=HTTP_200_OK, guards=[requires_user])
    async def cancel(self, request: Request[Any, Any, Any], db_session: AsyncSession, task_id: TaskIdParam) -> TaskView:
        """Cancel a task that has not finished; 409 `task_not_runnable` when it has."""
        user = _user(request)
        service = _service(request, db_session)
        task = await service.cancel(user, task_id)
        audit.record(
            db_session,
            action="task.cancel",
            outcome="success",
            actor_id=user.id,
            actor_role=user.role,
            ip=request.client.host if request.client else None,
            request_id=request_id_of(request.scope.get("state", {})),
            target_type="task",
            target_id=task.id,
            details={},
        )
        await db_session.commit()
        return await service.detail(user, task.id)
