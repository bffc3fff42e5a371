"""`/api/webhook`: your completion callback (one per user) and its delivery log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, Response, delete, get, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api.auth.guards import requires_user
from api.http.outages import dependency_error_handlers
from api.webhooks.service import (
    DeliveryPage,
    WebhookIn,
    WebhookService,
    WebhookView,
)

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser

__all__ = ("WebhookController",)

MAX_PAGE_SIZE = 100


def _user(request: Request[Any, Any, Any]) -> CurrentUser:
    user: CurrentUser = request.user
    return user


def _service(request: Request[Any, Any, Any], db_session: AsyncSession) -> WebhookService:
    return WebhookService(db_session, request.app.state.settings)


class WebhookController(Controller):
    path = "/api/webhook"
    tags = ["webhooks"]
    guards = [requires_user]
    exception_handlers = dependency_error_handlers()

    @get("/", status_code=HTTP_200_OK)
    async def get_webhook(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> WebhookView:
        return await _service(request, db_session).get(_user(request))

    @put("/", status_code=HTTP_200_OK)
    async def put_webhook(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, data: WebhookIn
    ) -> Response[WebhookView]:
        """Set the URL called when any of your tasks ends; 201 with the signing secret when created."""
        view, created = await _service(request, db_session).put(_user(request), data)
        return Response(view, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @delete("/", status_code=HTTP_204_NO_CONTENT)
    async def delete_webhook(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> None:
        await _service(request, db_session).delete(_user(request))

    @get("/deliveries", status_code=HTTP_200_OK)
    async def deliveries(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        page: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Parameter(query="pageSize", ge=1, le=MAX_PAGE_SIZE)] = 20,
    ) -> DeliveryPage:
        """Your deliveries, newest first, with attempts and the last answer or error."""
        return await _service(request, db_session).deliveries(_user(request), page=page, page_size=page_size)
