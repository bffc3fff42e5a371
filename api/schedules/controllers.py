"""`/api/schedules`: CRUD, pause/resume and run history of recurring task templates (owner-scoped)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api.auth.guards import requires_user
from api.http.outages import dependency_error_handlers
from api.schedules.schemas import (  # noqa: TC001 - Litestar resolves handler hints at runtime
    ScheduleCreate,
    SchedulePage,
    ScheduleRunPage,
    ScheduleUpdate,
    ScheduleView,
)
from api.schedules.service import ScheduleService, schedule_view

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser

__all__ = ("ScheduleController",)

MAX_PAGE_SIZE = 100
IdParam = Annotated[str, Parameter(max_length=64)]
PageParam = Annotated[int, Parameter(ge=1, le=1_000_000)]
PageSizeParam = Annotated[int, Parameter(query="pageSize", ge=1, le=MAX_PAGE_SIZE)]


def _user(request: Request[Any, Any, Any]) -> CurrentUser:
    user: CurrentUser = request.user
    return user


def _service(request: Request[Any, Any, Any], db_session: AsyncSession) -> ScheduleService:
    return ScheduleService(db_session, request.app.state.settings.ops)


class ScheduleController(Controller):
    path = "/api/schedules"
    tags = ["schedules"]
    guards = [requires_user]
    exception_handlers = dependency_error_handlers()

    @post("/", status_code=HTTP_201_CREATED)
    async def create(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, data: ScheduleCreate
    ) -> ScheduleView:
        """A cron (with time zone) or interval schedule; the answer lists the next five firings."""
        return await _service(request, db_session).create(_user(request), data)

    @get("/", status_code=HTTP_200_OK)
    async def list_schedules(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        page: PageParam = 1,
        page_size: PageSizeParam = 20,
    ) -> SchedulePage:
        """Yours, newest first (admins: everyone's)."""
        return await _service(request, db_session).list_page(_user(request), page=page, page_size=page_size)

    @get("/{schedule_id:str}", status_code=HTTP_200_OK)
    async def get_schedule(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, schedule_id: IdParam
    ) -> ScheduleView:
        service = _service(request, db_session)
        return schedule_view(await service.get_visible(_user(request), schedule_id))

    @patch("/{schedule_id:str}", status_code=HTTP_200_OK)
    async def update(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, schedule_id: IdParam, data: ScheduleUpdate
    ) -> ScheduleView:
        return await _service(request, db_session).update(_user(request), schedule_id, data)

    @delete("/{schedule_id:str}", status_code=HTTP_204_NO_CONTENT)
    async def remove(self, request: Request[Any, Any, Any], db_session: AsyncSession, schedule_id: IdParam) -> None:
        """Deletes the schedule and its run history; tasks it submitted stay."""
        await _service(request, db_session).delete(_user(request), schedule_id)

    @post("/{schedule_id:str}/pause", status_code=HTTP_200_OK)
    async def pause(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, schedule_id: IdParam
    ) -> ScheduleView:
        return await _service(request, db_session).set_paused(_user(request), schedule_id, paused=True)

    @post("/{schedule_id:str}/resume", status_code=HTTP_200_OK)
    async def resume(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, schedule_id: IdParam
    ) -> ScheduleView:
        """Continues from now: occurrences that fell in the pause are not caught up."""
        return await _service(request, db_session).set_paused(_user(request), schedule_id, paused=False)

    @get("/{schedule_id:str}/runs", status_code=HTTP_200_OK)
    async def runs(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        schedule_id: IdParam,
        page: PageParam = 1,
        page_size: PageSizeParam = 20,
    ) -> ScheduleRunPage:
        """What each occurrence did, newest first."""
        return await _service(request, db_session).runs(_user(request), schedule_id, page=page, page_size=page_size)
