"""Operator holds: pause a task type or a route, drain an agent, disable a user.

Pauses and drains are Redis sets the scheduler reads on every dispatch (`scheduler/keys.py`): a
paused task stays `queued` in its place and a running one finishes; a drained agent keeps its
running tasks and gets no new one, and counts as drained once it holds none. Resuming wakes the
dispatch loops so held work moves at once. Each hold is also an `operator_holds` row, written before
the set: when Redis comes back empty the reconciler refills the sets from them before it requeues a
single task, so a paused type does not start running after a Redis loss. Disabling a user is a
database change (tokens stop working at their next check) plus the `user_disabled` control message,
which closes their sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from api.auth.keys import USER_VERSION_TTL_S, user_version_key
from api.db.base import utcnow
from api.db.models.agents import Agent
from api.db.models.auth import RefreshToken
from api.db.models.ops import OperatorHold
from api.db.models.users import User
from api.errors import ConflictError, NotFoundError, ValidationFailedError
from api.ws.control import publish_control
from protocol.limits import MAX_ID_LENGTH, Capabilities, TaskType
from scheduler.keys import Keys, route_id

if TYPE_CHECKING:
    import redis.asyncio
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.auth.identity import CurrentUser
    from scheduler.client import SchedulerClient

__all__ = ("DrainView", "Holds", "HoldsView", "PauseRequest", "UserStateView", "restore_holds")

AgentRef = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
RouteRef = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_ID_LENGTH + 2, pattern=r"^(a|c):[\x21-\x7e]+$")]


class PauseRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Exactly one of: a task type; a route by its id; a route by pinned agent; a route by capability set."""

    type: TaskType | None = None
    route: RouteRef | None = None
    agent_id: AgentRef | None = None
    """The route of tasks pinned to this agent."""
    capabilities: Capabilities | None = None
    """The route of tasks needing exactly this capability set (`[]`: tasks with none)."""


class HoldsView(msgspec.Struct, rename="camel", kw_only=True):
    paused_types: list[str]
    paused_routes: list[str]
    drained_agents: list[str]


class DrainView(msgspec.Struct, rename="camel", kw_only=True):
    agent_id: str
    draining: bool
    online: bool
    running: int
    """Tasks the agent still holds."""
    drained: bool
    """Draining and holding nothing: safe to stop."""


class UserStateView(msgspec.Struct, rename="camel", kw_only=True):
    user_id: str
    active: bool


def _names(raw: set[bytes] | set[str]) -> list[str]:
    return sorted(m.decode() if isinstance(m, bytes) else m for m in raw)


def _set_of(keys: Keys, kind: str) -> str:
    return {"type": keys.paused_types(), "route": keys.paused_routes(), "agent": keys.drained_agents()}[kind]


async def restore_holds(session: AsyncSession, redis: redis.asyncio.Redis, prefix: str) -> int:
    """Put every recorded hold back into the scheduler's sets (after Redis lost them); returns how many."""
    keys = Keys(prefix)
    rows = (await session.execute(select(OperatorHold.kind, OperatorHold.name))).all()
    if rows:
        async with redis.pipeline(transaction=False) as pipe:
            for kind, name in rows:
                pipe.sadd(_set_of(keys, kind), name)
            await pipe.execute()
    return len(rows)


class Holds:
    def __init__(
        self,
        session: AsyncSession,
        redis: redis.asyncio.Redis,
        scheduler: SchedulerClient,
        prefix: str,
        *,
        actor_id: str | None = None,
    ):
        self._session = session
        self._redis = redis
        self._scheduler = scheduler
        self._prefix = prefix
        self._keys = Keys(prefix)
        self._actor_id = actor_id

    async def _record(self, kind: str, name: str) -> None:
        if await self._session.get(OperatorHold, (kind, name)) is not None:
            return
        self._session.add(OperatorHold(kind=kind, name=name, actor_id=self._actor_id))
        try:
            await self._session.commit()
        except IntegrityError:  # another admin recorded the same hold a moment ago
            await self._session.rollback()

    async def _forget(self, kind: str, name: str) -> None:
        await self._session.execute(delete(OperatorHold).where(OperatorHold.kind == kind, OperatorHold.name == name))
        await self._session.commit()

    async def view(self) -> HoldsView:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self._keys.paused_types())
            pipe.smembers(self._keys.paused_routes())
            pipe.smembers(self._keys.drained_agents())
            types, routes, agents = await pipe.execute()
        return HoldsView(paused_types=_names(types), paused_routes=_names(routes), drained_agents=_names(agents))

    def _target(self, data: PauseRequest) -> tuple[str, str]:
        given = [v for v in (data.type, data.route, data.agent_id, data.capabilities) if v is not None]
        if len(given) != 1:
            raise ValidationFailedError("give exactly one of type, route, agentId, capabilities")
        if data.type is not None:
            return "type", data.type
        if data.route is not None:
            return "route", data.route
        return "route", route_id(data.agent_id, tuple(data.capabilities or ()))

    async def pause(self, data: PauseRequest) -> HoldsView:
        kind, member = self._target(data)
        await self._record(kind, member)
        await self._redis.sadd(_set_of(self._keys, kind), member)
        return await self.view()

    async def resume(self, data: PauseRequest) -> HoldsView:
        kind, member = self._target(data)
        await self._forget(kind, member)
        if await self._redis.srem(_set_of(self._keys, kind), member):
            await self._wake()
        return await self.view()

    async def _wake(self) -> None:
        # The dispatch loops block on the wake list; held work is not otherwise announced again.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._keys.wake(), "1")
            pipe.ltrim(self._keys.wake(), 0, 0)
            pipe.expire(self._keys.wake(), 60)
            await pipe.execute()

    async def _agent(self, agent_id: str) -> Agent:
        agent = await self._session.get(Agent, agent_id) if len(agent_id) <= MAX_ID_LENGTH else None
        if agent is None:
            raise NotFoundError("no such agent")
        return agent

    async def drain_state(self, agent_id: str) -> DrainView:
        agent = await self._agent(agent_id)
        draining = bool(await self._redis.sismember(self._keys.drained_agents(), agent.id))
        presence = {a.agent_id: a for a in await self._scheduler.online_agents()}.get(agent.id)
        running = presence.running if presence is not None else 0
        return DrainView(
            agent_id=agent.id,
            draining=draining,
            online=presence is not None,
            running=running,
            drained=draining and running == 0,
        )

    async def drain(self, agent_id: str) -> DrainView:
        agent = await self._agent(agent_id)
        await self._record("agent", agent.id)
        await self._redis.sadd(self._keys.drained_agents(), agent.id)
        return await self.drain_state(agent.id)

    async def undrain(self, agent_id: str) -> DrainView:
        agent = await self._agent(agent_id)
        await self._forget("agent", agent.id)
        if await self._redis.srem(self._keys.drained_agents(), agent.id):
            await self._wake()
        return await self.drain_state(agent.id)

    async def set_user_active(self, admin: CurrentUser, user_id: str, *, active: bool) -> UserStateView:
        user = await self._session.get(User, user_id) if len(user_id) <= MAX_ID_LENGTH else None
        if user is None:
            raise NotFoundError("no such user")
        if not active and user.id == admin.id:
            raise ConflictError("an admin cannot disable themselves")
        if user.is_active != active:
            user.is_active = active
            user.updated_at = utcnow()
            if not active:
                # Every access token carries the version: bumping it ends them all, revocation cache or not.
                user.token_version += 1
                await self._session.execute(
                    update(RefreshToken)
                    .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
            await self._session.commit()
        if not active:
            # Replicas serve checked tokens from a short cache: this key makes them refuse the old
            # version on the next request instead of within the cache's bound.
            await self._redis.set(user_version_key(self._prefix, user.id), user.token_version, ex=USER_VERSION_TTL_S)
            await publish_control(self._redis, self._prefix, "user_disabled", user.id)
        return UserStateView(user_id=user.id, active=user.is_active)
