"""`agent/status` frames: which agents are online, and their load, for watchers subscribed with `all: true`.

Online means what the scheduler means (and `GET /api/agents` shows): a live presence lease. So the
source of truth is one poll of `scheduler.online_agents()` per interval, per API process, and only
while some local socket watches: it sees every replica's agents and lease expiry alike. A local
connect or disconnect pokes the poll at once (a deleted agent's presence is removed at once, so its
`online: false` follows right away; a plain disconnect keeps the lease, so `online: false` follows
its expiry). Each poll sends the differences from what watchers were last told: online/offline
flips, and running/concurrency changes, at most `MAX_CHANGES_PER_POLL` (the rest next time).
A watcher that subscribes gets the last known state of the agents it may see, then the changes.
Admins see every agent; users see public agents and their own.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.exceptions
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from api.db.models.agents import Agent
from api.ws.events import AgentStatusEvent
from protocol.envelope import encode_frame
from protocol.messages import AgentStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.ws.registry import SessionRegistry, Watcher
    from scheduler.client import SchedulerClient

__all__ = ("MAX_CHANGES_PER_POLL", "AgentStatusFeed")

logger = logging.getLogger(__name__)

MAX_CHANGES_PER_POLL = 200
"""Agent changes sent per poll (and agents in a new watcher's snapshot): bounded next to the send backlog."""
_TRANSIENT = (redis.exceptions.RedisError, OSError, SQLAlchemyError)


@dataclass(frozen=True, slots=True)
class _Known:
    status: AgentStatus
    owner_id: str
    is_public: bool

    def event(self) -> AgentStatusEvent:
        frame = encode_frame(self.status).decode()
        return AgentStatusEvent(self.status.agent_id, self.owner_id, self.is_public, frame)


class AgentStatusFeed:
    """The poller; `start()`/`stop()` bracket it, `poke()` asks for a poll now, `poll_once()` is one step."""

    def __init__(
        self,
        scheduler: SchedulerClient,
        db: async_sessionmaker[AsyncSession],
        registry: SessionRegistry,
        *,
        interval_s: float,
    ) -> None:
        self._scheduler = scheduler
        self._db = db
        self._registry = registry
        self._interval_s = interval_s
        self._told: dict[str, _Known] | None = None
        """What watchers were last told, per agent id (online ones only); None: nobody watches."""
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._interval_s > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="ws-agent-status")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    def poke(self) -> None:
        """An agent connected or left here: poll now rather than at the next interval."""
        self._poke.set()

    def watcher_added(self, watcher: Watcher) -> None:
        """A socket subscribed with `all: true`: the last known state now, the changes from then on."""
        if self._told is None:
            self.poke()  # the first watcher: the next poll sends everything online as new
            return
        for known in list(self._told.values())[:MAX_CHANGES_PER_POLL]:
            watcher.deliver_agent_status(known.event())

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._interval_s):
                    await self._poke.wait()
            except TimeoutError:
                pass
            self._poke.clear()
            try:
                await self.poll_once()
            except _TRANSIENT:
                logger.warning("agent status poll skipped (storage error)", exc_info=True)
            except Exception:
                logger.exception("agent status poll failed")

    async def poll_once(self) -> int:
        """Send what changed since the last poll to the local watchers; returns the number of changes sent."""
        watchers = self._registry.agent_watchers()
        if not watchers:
            self._told = None  # nobody to tell: stop tracking (and polling Redis for nothing)
            return 0
        told = self._told if self._told is not None else {}
        online = {p.agent_id: p for p in await self._scheduler.online_agents()}
        changed: list[_Known] = []
        for agent_id, was in told.items():
            if agent_id not in online:
                gone = AgentStatus(agent_id=agent_id, online=False, running=0, concurrency=was.status.concurrency)
                changed.append(_Known(gone, was.owner_id, was.is_public))
        fresh = [agent_id for agent_id in online if agent_id not in told]
        owners = await self._owners(fresh[:MAX_CHANGES_PER_POLL]) if fresh else {}
        for agent_id, presence in online.items():
            status = AgentStatus(
                agent_id=agent_id, online=True, running=presence.running, concurrency=presence.concurrency
            )
            known = told.get(agent_id)
            if known is not None:
                if known.status != status:
                    changed.append(_Known(status, known.owner_id, known.is_public))
            elif agent_id in owners:  # unknown to the database (deleted a moment ago): not announced
                owner_id, is_public = owners[agent_id]
                changed.append(_Known(status, owner_id, is_public))
        # Offline flips first: they matter most; whatever is over the cap waits for the next poll.
        sent = changed[:MAX_CHANGES_PER_POLL]
        for known in sent:
            if known.status.online:
                told[known.status.agent_id] = known
            else:
                told.pop(known.status.agent_id, None)
        self._told = told
        for known in sent:
            event = known.event()
            for watcher in watchers:
                watcher.deliver_agent_status(event)
        return len(sent)

    async def _owners(self, agent_ids: list[str]) -> dict[str, tuple[str, bool]]:
        async with self._db() as session:
            rows = await session.execute(
                select(Agent.id, Agent.owner_id, Agent.is_public).where(Agent.id.in_(agent_ids))
            )
            return {str(agent_id): (str(owner_id), bool(is_public)) for agent_id, owner_id, is_public in rows}
