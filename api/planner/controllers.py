"""`/api/planner`: seed 002's contract, route for route. Thin: parse, call a service, answer.

The two LLM-backed routes (from-text, session messages) wait for a scheduler task with a bound (jobs.py);
`GET /jobs/{id}` is where a request that answered 504 finds its result.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api import audit
from api.auth.guards import requires_user
from api.errors import ValidationFailedError, request_id_of
from api.http.outages import dependency_error_handlers
from api.planner.llm_settings import LlmSettingsService
from api.planner.schemas import (
    FromTextCreate,
    JobOut,
    LlmSettingsOut,
    LlmSettingsUpdate,
    MessageCreate,
    MessageListOut,
    ReplyOut,
    SessionOut,
    TaskListOut,
    TaskWithSession,
)
from api.planner.service import PlannerService, parse_id
from api.planner.views import session_view

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser
    from api.planner.runtime import PlannerRuntime

__all__ = ("LlmSettingsController", "PlannerController")

MAX_PAGE = 200
PathId = Annotated[str, Parameter(max_length=64)]


def _user(request: Request[Any, Any, Any]) -> CurrentUser:
    user: CurrentUser = request.user
    return user


def _runtime(request: Request[Any, Any, Any]) -> PlannerRuntime:
    runtime: PlannerRuntime = request.app.state.planner
    return runtime


def _before(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = msgspec.convert(value, dt.datetime)
    except msgspec.ValidationError as exc:
        raise ValidationFailedError("before must be an RFC 3339 time", {"field": "before"}) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


class PlannerController(Controller):
    path = "/api/planner"
    tags = ["planner"]
    guards = [requires_user]
    exception_handlers = dependency_error_handlers()

    @post(
        "/tasks/from-text",
        status_code=HTTP_200_OK,
        operation_id="plannerCreateTaskFromText",
        summary="Create a task with steps from free text (LLM; waits with a bound, 504 names the job).",
    )
    async def create_from_text(self, request: Request[Any, Any, Any], data: FromTextCreate) -> TaskWithSession:
        return await _runtime(request).jobs.from_text(_user(request), data.raw_text)

    @get("/tasks", operation_id="plannerListTasks", summary="Your planner tasks, newest first.")
    async def list_tasks(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        status: Annotated[str | None, Parameter(max_length=16)] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000)] = 0,
    ) -> TaskListOut:
        return await PlannerService(db_session).list_tasks(_user(request).id, status=status, limit=limit, offset=offset)

    @get(
        "/tasks/{task_id:str}",
        operation_id="plannerGetTask",
        summary="A task with its steps and its default session (created if missing).",
    )
    async def get_task(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, task_id: PathId
    ) -> TaskWithSession:
        return await PlannerService(db_session).task_with_session(
            _user(request).id, parse_id(task_id, "task not found")
        )

    @get(
        "/sessions/global",
        operation_id="plannerGetGlobalSession",
        summary="Your global session (created on first use).",
    )
    async def global_session(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> SessionOut:
        session = await PlannerService(db_session).default_session(_user(request).id, None)
        return SessionOut(session=session_view(session))

    @get(
        "/sessions/{session_id:str}/messages",
        operation_id="plannerListMessages",
        summary="A session's newest messages (before a time, when given), oldest first.",
    )
    async def list_messages(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        session_id: PathId,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 50,
        before: Annotated[str | None, Parameter(max_length=64, description="RFC 3339 time")] = None,
    ) -> MessageListOut:
        return await PlannerService(db_session).messages(
            _user(request).id, parse_id(session_id, "session not found"), limit=limit, before=_before(before)
        )

    @post(
        "/sessions/{session_id:str}/messages",
        status_code=HTTP_200_OK,
        operation_id="plannerPostMessage",
        summary="Send a message; an agent answers and may patch tasks (LLM; streamed to /ws session watchers).",
    )
    async def post_message(self, request: Request[Any, Any, Any], session_id: PathId, data: MessageCreate) -> ReplyOut:
        return await _runtime(request).jobs.reply(
            _user(request), parse_id(session_id, "session not found"), data.content
        )

    @get(
        "/jobs/{job_id:str}",
        operation_id="plannerGetJob",
        summary="An LLM-backed request's job: pending, failed, or done with the answer it would have given.",
    )
    async def get_job(self, request: Request[Any, Any, Any], job_id: PathId) -> JobOut:
        return await _runtime(request).jobs.job(_user(request).id, job_id)


def _settings_service(request: Request[Any, Any, Any], db_session: AsyncSession) -> LlmSettingsService:
    runtime = _runtime(request)
    return LlmSettingsService(db_session, keys=runtime.keys, allow=runtime.allow, resolve=runtime.resolver)


def _audit(request: Request[Any, Any, Any], db_session: AsyncSession, action: str, **details: Any) -> None:
    user = _user(request)
    audit.record(
        db_session,
        action=action,
        outcome="success",
        actor_id=user.id,
        actor_role=user.role,
        ip=request.client.host if request.client else None,
        request_id=request_id_of(request.scope.get("state", {})),
        target_type="llm_settings",
        target_id=user.id,
        details=details,
    )


class LlmSettingsController(Controller):
    path = "/api/planner/llm-settings"
    tags = ["planner"]
    guards = [requires_user]
    exception_handlers = dependency_error_handlers()

    @get("/me", operation_id="plannerGetLlmSettings", summary="Your LLM settings (never the key: `hasApiKey`).")
    async def get_settings(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> LlmSettingsOut:
        return LlmSettingsOut(llm_settings=await _settings_service(request, db_session).get(_user(request).id))

    @put(
        "/me",
        status_code=HTTP_200_OK,
        operation_id="plannerPutLlmSettings",
        summary="Create or update your LLM settings; the key is stored encrypted; the URL must be public.",
    )
    async def put_settings(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, data: LlmSettingsUpdate
    ) -> LlmSettingsOut:
        user = _user(request)
        view, changed = await _settings_service(request, db_session).put(user.id, data)
        _audit(request, db_session, "llm_settings.update", fields=changed, hasApiKey=view.has_api_key)
        await db_session.commit()
        _runtime(request).sealer.forget_owner(user.id)
        return LlmSettingsOut(llm_settings=view)

    @delete(
        "/me",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="plannerDeleteLlmSettings",
        summary="Remove your LLM settings (key included).",
    )
    async def delete_settings(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> None:
        user = _user(request)
        if await _settings_service(request, db_session).delete(user.id):
            _audit(request, db_session, "llm_settings.delete")
            await db_session.commit()
        _runtime(request).sealer.forget_owner(user.id)
