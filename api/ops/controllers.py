"""`/api/dead-letters` (owner-scoped; admins see all) and `/api/admin/dead-letters/retry` (bulk, by type)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api import audit
from api.auth.guards import requires_admin, requires_user
from api.errors import request_id_of
from api.http.outages import dependency_error_handlers
from api.ops.dead_letters import DeadLetterPage, DeadLetterService, DeadLetterView, RetryOutcome, State
from api.tasks.service import SubmitLimit, TaskService
from protocol.limits import MAX_TYPE_LENGTH, TaskType

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser

__all__ = ("AdminDeadLetterController", "DeadLetterController")

MAX_PAGE_SIZE = 100
MAX_BULK_RETRY = 500
TaskIdParam = Annotated[str, Parameter(max_length=64)]


class BulkRetry(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    type: TaskType
    """Retry the open dead letters of this task type."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_BULK_RETRY)] = 100
    """At most this many, oldest failure first."""


class BulkRetryOut(msgspec.Struct, rename="camel", kw_only=True):
    items: list[RetryOutcome]
    retried: int


def _user(request: Request[Any, Any, Any]) -> CurrentUser:
    user: CurrentUser = request.user
    return user


def _service(request: Request[Any, Any, Any], db_session: AsyncSession, *, rate_limited: bool) -> DeadLetterService:
    state = request.app.state
    limits = state.settings.ratelimit
    # A user's retry counts as a submission; an admin's bulk retry is an operator action and does not.
    tasks = TaskService(
        db_session,
        state.scheduler,
        limiter=state.auth.limiter if rate_limited else None,
        submit_limit=SubmitLimit(limits.task_submit_per_user, limits.task_submit_window_s) if rate_limited else None,
    )
    return DeadLetterService(db_session, tasks)


async def _audit(
    request: Request[Any, Any, Any], db_session: AsyncSession, action: str, target: str | None, details: dict[str, Any]
) -> None:
    user = _user(request)
    audit.record(
        db_session,
        action=action,
        outcome="success",
        actor_id=user.id,
        actor_role=user.role,
        ip=request.client.host if request.client else None,
        request_id=request_id_of(request.scope.get("state", {})),
        target_type="task",
        target_id=target,
        details=details,
    )
    await db_session.commit()


class DeadLetterController(Controller):
    path = "/api/dead-letters"
    tags = ["operations"]
    guards = [requires_user]
    exception_handlers = dependency_error_handlers()

    @get("/", status_code=HTTP_200_OK)
    async def list_dead_letters(
        self,
        *,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        dl_state: Annotated[State, Parameter(query="state")] = "open",
        task_type: Annotated[str | None, Parameter(query="type", max_length=MAX_TYPE_LENGTH)] = None,
        page: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Parameter(query="pageSize", ge=1, le=MAX_PAGE_SIZE)] = 20,
    ) -> DeadLetterPage:
        """Failed tasks with their last error, newest failure first. `state`: open (default), retried, discarded."""
        return await _service(request, db_session, rate_limited=False).list_page(
            _user(request), state=dl_state, type_=task_type, page=page, page_size=page_size
        )

    @get("/{task_id:str}", status_code=HTTP_200_OK)
    async def get_dead_letter(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, task_id: TaskIdParam
    ) -> DeadLetterView:
        return await _service(request, db_session, rate_limited=False).get(_user(request), task_id)

    @post("/{task_id:str}/retry", status_code=HTTP_201_CREATED)
    async def retry(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, task_id: TaskIdParam
    ) -> Response[DeadLetterView]:
        """Submit the failed task again as a new task (`retryTaskId`); 200 with the same one when repeated."""
        view, created = await _service(request, db_session, rate_limited=True).retry(_user(request), task_id)
        if created:
            await _audit(request, db_session, "dead_letter.retry", task_id, {"retryTaskId": view.retry_task_id})
        return Response(view, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @post("/{task_id:str}/discard", status_code=HTTP_200_OK)
    async def discard(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, task_id: TaskIdParam
    ) -> DeadLetterView:
        """Hide the dead letter from the open list; the failed task itself is unchanged."""
        view = await _service(request, db_session, rate_limited=False).discard(_user(request), task_id)
        await _audit(request, db_session, "dead_letter.discard", task_id, {})
        return view


class AdminDeadLetterController(Controller):
    path = "/api/admin/dead-letters"
    tags = ["operations"]
    guards = [requires_admin]
    exception_handlers = dependency_error_handlers()

    @post("/retry", status_code=HTTP_200_OK)
    async def bulk_retry(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, data: BulkRetry
    ) -> BulkRetryOut:
        """Retry up to `limit` open dead letters of one type; per-task failures are reported, not fatal."""
        service = _service(request, db_session, rate_limited=False)
        items = await service.bulk_retry(_user(request), data.type, data.limit)
        retried = sum(1 for i in items if i.retry_task_id is not None)
        # A task type may be longer than the audit row's target id (64): it goes in the details.
        await _audit(request, db_session, "dead_letter.bulk_retry", None, {"type": data.type, "retried": retried})
        return BulkRetryOut(items=items, retried=retried)
