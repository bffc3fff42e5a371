"""`/api/agents`: admins manage agents; users see public ones. Thin: parse, call the service, commit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api import audit
from api.agents.schemas import AgentCreate, AgentCreated, AgentList, AgentUpdate, RotateToken
from api.agents.service import AgentService, PinnedTasks
from api.auth.guards import requires_admin, requires_user
from api.errors import request_id_of
from api.http import client_ip as http_client_ip
from api.http.outages import dependency_error_handlers
from protocol.views import AgentView  # noqa: TC001 - Litestar resolves handler hints at runtime

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser

__all__ = ("AgentController", "client_ip")


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    """The caller's address for audit rows: behind `TASKYARD_API_TRUSTED_PROXIES`, the client, not the proxy."""
    return http_client_ip(request)


def _user(request: Request[Any, Any, Any]) -> CurrentUser:
    user: CurrentUser = request.user
    return user


def _service(request: Request[Any, Any, Any], db_session: AsyncSession) -> AgentService:
    state = request.app.state
    return AgentService(db_session, state.scheduler, lease_s=state.settings.ws.heartbeat_timeout_s)


def _audit(
    request: Request[Any, Any, Any], db_session: AsyncSession, action: str, agent_id: str, **details: Any
) -> None:
    user = _user(request)
    audit.record(
        db_session,
        action=action,
        outcome="success",
        actor_id=user.id,
        actor_role=user.role,
        ip=client_ip(request),
        request_id=request_id_of(request.scope.get("state", {})),
        target_type="agent",
        target_id=agent_id,
        details=details or {},
    )


AgentIdParam = Annotated[str, Parameter(max_length=64)]


class AgentController(Controller):
    path = "/api/agents"
    tags = ["agents"]
    guards = [requires_user]
    exception_handlers = dependency_error_handlers()

    @get("/", status_code=HTTP_200_OK)
    async def list_agents(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        page: Annotated[int, Parameter(ge=1, le=100000)] = 1,
        page_size: Annotated[int, Parameter(query="pageSize", ge=1, le=200)] = 50,
    ) -> AgentList:
        """Agents you may use (yours and public ones; admins see all), with live presence."""
        items, total = await _service(request, db_session).list_visible(
            _user(request), limit=page_size, offset=(page - 1) * page_size
        )
        return AgentList(items=items, total=total)

    @post("/", status_code=HTTP_201_CREATED, guards=[requires_admin])
    async def create_agent(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, data: AgentCreate
    ) -> AgentCreated:
        """Register an agent (admins). The token is in this answer only; store it now."""
        agent, created = await _service(request, db_session).create(_user(request), data)
        _audit(request, db_session, "agent.create", agent.id, tokenGenerated=data.token is None)
        await db_session.commit()
        return created

    @get("/{agent_id:str}", status_code=HTTP_200_OK)
    async def get_agent(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, agent_id: AgentIdParam
    ) -> AgentView:
        """One agent you may use, with live presence."""
        return await _service(request, db_session).view(_user(request), agent_id)

    @put("/{agent_id:str}", status_code=HTTP_200_OK, guards=[requires_admin])
    async def update_agent(
        self, request: Request[Any, Any, Any], db_session: AsyncSession, agent_id: AgentIdParam, data: AgentUpdate
    ) -> AgentView:
        """Change an agent's name, capabilities, concurrency, tags or visibility (admins)."""
        service = _service(request, db_session)
        agent = await service.update(_user(request), agent_id, data)
        changed = sorted(f for f in data.__struct_fields__ if getattr(data, f) is not msgspec.UNSET)
        _audit(request, db_session, "agent.update", agent.id, fields=changed)
        await db_session.commit()
        await service.announce_update(agent.id)
        return await service.view(_user(request), agent.id)

    @delete("/{agent_id:str}", status_code=HTTP_204_NO_CONTENT, guards=[requires_admin])
    async def delete_agent(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        pinned_tasks: PinnedTasks,
        agent_id: AgentIdParam,
    ) -> None:
        """Delete an agent (admins): its sockets are closed and tasks pinned to it are canceled."""
        service = _service(request, db_session)
        agent = await service.delete(_user(request), agent_id)
        _audit(request, db_session, "agent.delete", agent.id)
        await db_session.commit()
        await service.revoke(agent.id)
        # Tasks pinned to it can never run now: end them rather than leave them queued forever.
        await pinned_tasks.cancel_pinned_to(agent.id)
        await db_session.commit()

    @post("/{agent_id:str}/rotate-token", status_code=HTTP_200_OK, guards=[requires_admin])
    async def rotate_token(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        agent_id: AgentIdParam,
        data: RotateToken | None = None,
    ) -> AgentCreated:
        """Replace an agent's token (admins): the old one stops working and its sockets are closed."""
        service = _service(request, db_session)
        agent, rotated = await service.rotate_token(_user(request), agent_id, data.token if data else None)
        _audit(request, db_session, "agent.rotate_token", agent.id, tokenGenerated=not (data and data.token))
        await db_session.commit()
        await service.revoke(agent.id)
        return rotated
