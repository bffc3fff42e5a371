"""Admin holds over REST: `/api/admin/pauses`, `/api/admin/agents/{id}/drain`, `/api/admin/users/{id}/disable`."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api import audit
from api.auth.guards import requires_admin
from api.errors import request_id_of
from api.http.outages import dependency_error_handlers
from api.ops.holds import DrainView, Holds, HoldsView, PauseRequest, UserStateView

__all__ = ("HoldsController",)

IdParam = Annotated[str, Parameter(max_length=64)]


def _holds(request: Request[Any, Any, Any], db_session: AsyncSession) -> Holds:
    state = request.app.state
    return Holds(db_session, state.redis, state.scheduler, state.settings.redis.prefix, actor_id=request.user.id)


async def _audit(
    request: Request[Any, Any, Any],
    db_session: AsyncSession,
    action: str,
    *,
    target_type: str,
    target: str | None,
    details: dict[str, Any],
) -> None:
    user = request.user
    audit.record(
        db_session,
        action=action,
        outcome="success",
        actor_id=user.id,
        actor_role=user.role,
        ip=request.client.host if request.client else None,
        request_id=request_id_of(request.scope.get("state", {})),
        target_type=target_type,
        target_id=target,
        details=details,
    )
    await db_session.commit()


def _pause_details(data: PauseRequest) -> dict[str, Any]:
    return {
        k: v
        for k, v in (
            ("type", data.type),
            ("route", data.route),
            ("agentId", data.agent_id),
            ("capabilities", data.capabilities),
        )
        if v is not None
    }


class HoldsController(Controller):
    path = "/api/admin"
    tags = ["operations"]
    guards = [requires_admin]
    exception_handlers = dependency_error_handlers()

    @get("/pauses", status_code=HTTP_200_OK)
    async def list_holds(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> HoldsView:
        """Paused task types and routes, and drained agents."""
        return await _holds(request, db_session).view()

    @post("/pauses", status_code=HTTP_200_OK)
    async def pause(self, request: Request[Any, Any, Any], db_session: AsyncSession, data: PauseRequest) -> HoldsView:
        """Stop dispatching a task type or a route; queued tasks stay queued, running ones finish."""
        view = await _holds(request, db_session).pause(data)
        await _audit(
            request, db_session, "ops.pause", target_type="dispatch", target=None, details=_pause_details(data)
        )
        return view

    @post("/pauses/resume", status_code=HTTP_200_OK)
    async def resume(self, request: Request[Any, Any, Any], db_session: AsyncSession, data: PauseRequest) -> HoldsView:
        """Dispatch a paused task type or route again."""
        view = await _holds(request, db_session).resume(data)
        await _audit(
            request, db_session, "ops.resume", target_type="dispatch", target=None, details=_pause_details(data)
        )
        return view

    @get("/agents/{agent_id:str}/drain", status_code=HTTP_200_OK)
    async def drain_state(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, agent_id: IdParam
    ) -> DrainView:
        return await _holds(request, db_session).drain_state(agent_id)

    @post("/agents/{agent_id:str}/drain", status_code=HTTP_200_OK)
    async def drain(self, request: Request[Any, Any, Any], db_session: AsyncSession, agent_id: IdParam) -> DrainView:
        """No new task for the agent; it finishes what it holds (`drained` turns true when it holds none)."""
        view = await _holds(request, db_session).drain(agent_id)
        await _audit(request, db_session, "ops.drain", target_type="agent", target=agent_id, details={})
        return view

    @post("/agents/{agent_id:str}/undrain", status_code=HTTP_200_OK)
    async def undrain(self, request: Request[Any, Any, Any], db_session: AsyncSession, agent_id: IdParam) -> DrainView:
        view = await _holds(request, db_session).undrain(agent_id)
        await _audit(request, db_session, "ops.undrain", target_type="agent", target=agent_id, details={})
        return view

    @post("/users/{user_id:str}/disable", status_code=HTTP_200_OK)
    async def disable_user(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, user_id: IdParam
    ) -> UserStateView:
        """Tokens stop working, refresh tokens are revoked, the user's sockets (and their agents') close."""
        view = await _holds(request, db_session).set_user_active(request.user, user_id, active=False)
        await _audit(request, db_session, "ops.user_disable", target_type="user", target=user_id, details={})
        return view

    @post("/users/{user_id:str}/enable", status_code=HTTP_200_OK)
    async def enable_user(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, user_id: IdParam
    ) -> UserStateView:
        view = await _holds(request, db_session).set_user_active(request.user, user_id, active=True)
        await _audit(request, db_session, "ops.user_enable", target_type="user", target=user_id, details={})
        return view
