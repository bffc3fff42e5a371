"""`subscribe {sessionId}` on /ws: the events of a planner session's reply tasks, for its watchers on this replica.

Every replica's fan-out already receives every task event. For each user with session watchers here, the feed
watches that user's events in the session registry (like an `all: true` watcher) and forwards those of the
user's `planner.reply` tasks to the watchers of the task's session. Which session a task answers is read once
per task from the database (the job row is committed before the task is submitted, so no event can come
first); events that arrive during that read are held and then sent in order. Watchers get the frames as they
are (`task/status`, `task/progress`, and `task/stream` where the fan-out carries it), deduplicated by seq.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from sqlalchemy import and_, select
from sqlalchemy.exc import SQLAlchemyError

from api.db.models.planner import PlannerJob, PlannerSession
from api.db.models.tasks import Task

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.ws.events import AgentStatusEvent, WatchEvent
    from api.ws.registry import SessionRegistry
    from api.ws.runtime import SessionWatcher

__all__ = ("MAX_SESSIONS_PER_SOCKET", "SessionFeed")

logger = logging.getLogger(__name__)

MAX_SESSIONS_PER_SOCKET = 100
MAX_KNOWN_TASKS = 10_000
"""Tasks whose session (or none) this replica remembers (LRU)."""
MAX_HELD_EVENTS = 1000
"""Events of one task held while its session is looked up; past it the task's oldest are dropped."""


class SessionFeed:
    """One per process. Its registry-facing methods (`deliver`, ...) are synchronous and never block."""

    def __init__(self, db: async_sessionmaker[AsyncSession], registry: SessionRegistry) -> None:
        self._db = db
        self._registry = registry
        self._watchers: dict[int, set[SessionWatcher]] = {}
        self._sessions_of: dict[SessionWatcher, set[int]] = {}
        self._users: dict[int, str] = {}
        self._watching_users: dict[str, int] = {}
        """Per user, how many session subscriptions here (the owner watch lasts while it is > 0)."""
        self._known: OrderedDict[str, int | None] = OrderedDict()
        self._held: dict[str, list[WatchEvent]] = {}
        self._lookups: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        for task in list(self._lookups):
            task.cancel()
        await asyncio.gather(*self._lookups, return_exceptions=True)

    # --- subscriptions (called by the client session) -------------------------------------------

    async def watch(self, watcher: SessionWatcher, user_id: str, session_id: int) -> bool:
        """Start forwarding the session's reply events to `watcher`; False when it is not the user's session."""
        if session_id in self._sessions_of.get(watcher, set()):
            return True
        if len(self._sessions_of.get(watcher, ())) >= MAX_SESSIONS_PER_SOCKET:
            return False
        async with self._db() as session:
            owner = await session.scalar(select(PlannerSession.user_id).where(PlannerSession.id == session_id))
        if owner != user_id:
            return False
        self._watchers.setdefault(session_id, set()).add(watcher)
        self._sessions_of.setdefault(watcher, set()).add(session_id)
        self._users[session_id] = user_id
        self._watching_users[user_id] = self._watching_users.get(user_id, 0) + 1
        if self._watching_users[user_id] == 1:
            self._registry.watch_owner(user_id, self)
        return True

    def unwatch(self, watcher: SessionWatcher, session_id: int) -> None:
        sessions = self._sessions_of.get(watcher)
        if not sessions or session_id not in sessions:
            return
        sessions.discard(session_id)
        if not sessions:
            del self._sessions_of[watcher]
        members = self._watchers.get(session_id, set())
        members.discard(watcher)
        user_id = self._users[session_id]
        if not members:
            self._watchers.pop(session_id, None)
            self._users.pop(session_id, None)
        self._watching_users[user_id] -= 1
        if self._watching_users[user_id] <= 0:
            del self._watching_users[user_id]
            self._registry.unwatch_owner(user_id, self)

    def unwatch_all(self, watcher: SessionWatcher) -> None:
        for session_id in list(self._sessions_of.get(watcher, ())):
            self.unwatch(watcher, session_id)

    # --- the registry's side (a Watcher of the users above) ---------------------------------------

    def deliver(self, event: WatchEvent) -> None:
        if event.task_id in self._known:
            self._known.move_to_end(event.task_id)
            self._forward(self._known[event.task_id], event)
            return
        held = self._held.get(event.task_id)
        if held is not None:
            held.append(event)
            if len(held) > MAX_HELD_EVENTS:
                del held[0]
            return
        self._held[event.task_id] = [event]
        lookup = asyncio.create_task(self._resolve(event.task_id))
        self._lookups.add(lookup)
        lookup.add_done_callback(self._lookups.discard)

    def deliver_agent_status(self, event: AgentStatusEvent) -> None:
        """Session watchers do not get agent status."""

    def request_close(self, code: int, reason: str) -> None:
        """The fan-out lost events: close the session watchers too, so they reconnect and resubscribe."""
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                watcher.request_close(code, reason)

    def _forward(self, session_id: int | None, event: WatchEvent) -> None:
        if session_id is None:
            return
        for watcher in list(self._watchers.get(session_id, ())):
            watcher.deliver_session_event(event)

    async def _resolve(self, task_id: str) -> None:
        session_id: int | None = None
        resolved = False
        try:
            session_id = await self._session_of(task_id)
            resolved = True
        except SQLAlchemyError:
            logger.warning("planner session lookup failed task_id=%s; its held events are dropped", task_id)
        finally:
            held = self._held.pop(task_id, [])
        if not resolved:
            return
        self._known[task_id] = session_id
        if len(self._known) > MAX_KNOWN_TASKS:
            self._known.popitem(last=False)
        for event in held:
            self._forward(session_id, event)

    async def _session_of(self, task_id: str) -> int | None:
        """The session a `planner.reply` task answers, None for any other task."""
        query = (
            select(PlannerJob.session_id)
            .join(Task, and_(Task.owner_id == PlannerJob.user_id, Task.idempotency_key == PlannerJob.task_key))
            .where(Task.id == task_id, PlannerJob.kind == "reply")
        )
        async with self._db() as session:
            session_id: int | None = await session.scalar(query)
        return session_id
