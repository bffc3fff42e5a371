"""Agent records: CRUD, the write-only token, and authentication for the WebSocket handshake.

Owns the `agents` table. Presence (online, load) is read from the scheduler, never stored here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import redis.exceptions
from sqlalchemy import func, select

from api.agents.schemas import MAX_AGENT_META_BYTES, AgentCreate, AgentCreated, AgentUpdate
from api.db.base import utcnow
from api.db.models.agents import Agent
from api.db.models.users import User
from api.errors import NotFoundError, PayloadTooLargeError, UnauthorizedError
from protocol.views import AgentView
from scheduler.types import AgentPresence, AgentSpec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession

    from api.auth.identity import CurrentUser
    from scheduler.client import SchedulerClient

__all__ = ("AgentRecord", "AgentService", "PinnedTasks", "hash_token", "new_token")

logger = logging.getLogger(__name__)


class PinnedTasks:
    """What deleting an agent needs from the task side, handed in by `api.wiring` (agents never import tasks).

    A concrete class rather than a Protocol: Litestar checks a dependency's value against its annotation.
    """

    __slots__ = ("_cancel",)

    def __init__(self, cancel_pinned_to: Callable[[str], Awaitable[int]]) -> None:
        self._cancel = cancel_pinned_to

    async def cancel_pinned_to(self, agent_id: str) -> int:
        """End the unfinished tasks pinned to `agent_id` (they can never run now); the caller commits."""
        return await self._cancel(agent_id)


# Compared against when the agent id is unknown, so a miss costs the same as a wrong token.
_DUMMY_HASH = hashlib.sha256(b"taskyard-no-such-agent").hexdigest()


def new_token() -> str:
    """A fresh agent token: 256 bits from the OS CSPRNG."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """sha256 hex of a token. Right for high-entropy random tokens (no brute force to slow down)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """What the WebSocket handshake needs to know about an authenticated agent."""

    id: str
    owner_id: str
    name: str
    type: str
    capabilities: tuple[str, ...]
    concurrency: int
    is_public: bool


def _record(agent: Agent) -> AgentRecord:
    return AgentRecord(
        id=agent.id,
        owner_id=agent.owner_id,
        name=agent.name,
        type=agent.type,
        capabilities=tuple(agent.capabilities),
        concurrency=agent.concurrency,
        is_public=agent.is_public,
    )


def _check_meta(meta: dict[str, Any]) -> None:
    if len(msgspec.json.encode(meta)) > MAX_AGENT_META_BYTES:
        raise PayloadTooLargeError(f"meta is over {MAX_AGENT_META_BYTES} bytes", {"field": "meta"})


def _out(agent: Agent, presence: AgentPresence | None, lease_s: float | None = None) -> dict[str, Any]:
    last_heartbeat = None
    if presence is not None and lease_s is not None:
        # Each renewal sets the lease to now + lease_s, so its end tells when the last one happened.
        last_heartbeat = dt.datetime.fromtimestamp(presence.lease_until_ms / 1000 - lease_s, dt.UTC)
    return {
        "id": agent.id,
        "name": agent.name,
        "type": agent.type,
        "capabilities": list(agent.capabilities),
        "concurrency": agent.concurrency,
        "tags": list(agent.tags),
        "meta": dict(agent.meta),
        "is_public": agent.is_public,
        "trusted": agent.trusted,
        "online": presence is not None,
        "running": presence.running if presence is not None else 0,
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
        "last_heartbeat_at": last_heartbeat,
    }


class AgentService:
    """One per request (or per handshake): a database session plus the scheduler client.

    Admins manage agents; users see public agents only. Any agent a caller may not see is reported
    as not found, exactly like an unknown id.
    """

    def __init__(self, session: AsyncSession, scheduler: SchedulerClient, *, lease_s: float | None = None) -> None:
        self._session = session
        self._scheduler = scheduler
        self._lease_s = lease_s
        """The agents' presence lease (`heartbeat_timeout_s`); without it views carry no `lastHeartbeatAt`."""

    # --- reads ----------------------------------------------------------------------------

    async def get_visible(self, user: CurrentUser, agent_id: str) -> Agent:
        """The agent if `user` may see (and submit to) it, else `NotFoundError`."""
        agent = await self._session.get(Agent, agent_id)
        if agent is None or not (user.role == "admin" or agent.is_public):
            raise NotFoundError()
        return agent

    async def _presence(self) -> dict[str, AgentPresence]:
        """Online agents by id; best effort: an unreachable Redis shows every agent offline."""
        try:
            return {p.agent_id: p for p in await self._scheduler.online_agents()}
        except (redis.exceptions.RedisError, OSError):
            logger.warning("agent presence unavailable (Redis error); showing agents offline")
            return {}

    async def view(self, user: CurrentUser, agent_id: str) -> AgentView:
        agent = await self.get_visible(user, agent_id)
        presence = await self._presence()
        return AgentView(**_out(agent, presence.get(agent.id), self._lease_s))

    async def list_visible(self, user: CurrentUser, *, limit: int, offset: int) -> tuple[list[AgentView], int]:
        query = select(Agent)
        count = select(func.count()).select_from(Agent)
        if user.role != "admin":
            query = query.where(Agent.is_public.is_(True))
            count = count.where(Agent.is_public.is_(True))
        total = int((await self._session.execute(count)).scalar_one())
        rows = (
            (await self._session.execute(query.order_by(Agent.created_at, Agent.id).limit(limit).offset(offset)))
            .scalars()
            .all()
        )
        presence = await self._presence()
        return [AgentView(**_out(a, presence.get(a.id), self._lease_s)) for a in rows], total

    # --- writes (admin only; the controller guards) -----------------------------------------

    async def create(self, user: CurrentUser, data: AgentCreate) -> tuple[Agent, AgentCreated]:
        _check_meta(data.meta)
        token = data.token or new_token()
        now = utcnow()
        agent = Agent(
            id=str(uuid.uuid4()),
            owner_id=user.id,
            name=data.name,
            type=data.type,
            capabilities=sorted(set(data.capabilities)),
            concurrency=data.concurrency,
            tags=list(data.tags),
            meta=dict(data.meta),
            is_public=data.is_public,
            trusted=data.trusted,
            token_hash=hash_token(token),
            token_rotated_at=now,
            created_at=now,
            updated_at=now,
        )
        self._session.add(agent)
        await self._session.flush()
        return agent, AgentCreated(**_out(agent, None), token=token)

    async def update(self, user: CurrentUser, agent_id: str, data: AgentUpdate) -> Agent:
        agent = await self.get_visible(user, agent_id)
        if data.name is not msgspec.UNSET:
            agent.name = data.name
        if data.type is not msgspec.UNSET:
            agent.type = data.type
        if data.capabilities is not msgspec.UNSET:
            agent.capabilities = sorted(set(data.capabilities))
        if data.concurrency is not msgspec.UNSET:
            agent.concurrency = data.concurrency
        if data.tags is not msgspec.UNSET:
            agent.tags = list(data.tags)
        if data.meta is not msgspec.UNSET:
            _check_meta(data.meta)
            agent.meta = dict(data.meta)
        if data.is_public is not msgspec.UNSET:
            agent.is_public = data.is_public
        if data.trusted is not msgspec.UNSET:
            agent.trusted = data.trusted
        agent.updated_at = utcnow()
        await self._session.flush()
        return agent

    async def rotate_token(self, user: CurrentUser, agent_id: str, token: str | None) -> tuple[Agent, AgentCreated]:
        agent = await self.get_visible(user, agent_id)
        new = token or new_token()
        now = utcnow()
        agent.token_hash = hash_token(new)
        agent.token_rotated_at = now
        agent.updated_at = now
        await self._session.flush()
        return agent, AgentCreated(**_out(agent, None), token=new)

    async def delete(self, user: CurrentUser, agent_id: str) -> Agent:
        agent = await self.get_visible(user, agent_id)
        await self._session.delete(agent)
        await self._session.flush()
        return agent

    async def announce_update(self, agent_id: str) -> None:
        """After an update is committed: the agent's open sessions reload its capabilities and concurrency.

        Best effort (pub/sub): a session that misses it picks the change up at its periodic re-check.
        """
        try:
            await self._scheduler.publish_control("agent_updated", agent_id)
        except (redis.exceptions.RedisError, OSError):
            logger.warning("agent update not announced (Redis error) agent_id=%s", agent_id, exc_info=True)

    async def revoke(self, agent_id: str) -> None:
        """After a delete or rotate is committed: requeue the agent's tasks and close its sockets.

        Called after the commit, so a reconnect with the old token already fails. Best effort on
        Redis: if it is down, presence expires with the lease and replicas recheck the token on
        their next handshake; the failure is logged, the REST call still succeeds.
        """
        try:
            await self._scheduler.agent_offline(agent_id, requeue_now=True)
            await self._scheduler.publish_control("agent_revoked", agent_id)
        except (redis.exceptions.RedisError, OSError):
            logger.warning("agent revoke not propagated (Redis error) agent_id=%s", agent_id, exc_info=True)

    # --- the WebSocket handshake ------------------------------------------------------------

    async def authenticate(self, agent_id: str, token: str) -> AgentRecord:
        """The agent if `token` is its current token, else `UnauthorizedError` (same for unknown ids)."""
        agent = await self._session.get(Agent, agent_id) if 0 < len(agent_id) <= 64 else None
        expected = agent.token_hash if agent is not None else _DUMMY_HASH
        ok = hmac.compare_digest(hash_token(token).encode(), expected.encode())
        if agent is None or not ok:
            raise UnauthorizedError("invalid agent credentials")
        # A disabled owner's agents are refused too (the `user_disabled` control message closes their sockets).
        if not await self._session.scalar(select(User.is_active).where(User.id == agent.owner_id)):
            raise UnauthorizedError("invalid agent credentials")
        return _record(agent)

    @staticmethod
    def spec(agent: AgentRecord | Agent) -> AgentSpec:
        """The scheduler's view of an agent, for `agent_online` on connect and on every heartbeat."""
        return AgentSpec(
            agent_id=agent.id,
            owner_id=agent.owner_id,
            capabilities=tuple(agent.capabilities),
            concurrency=agent.concurrency,
            accepting=True,
        )
