"""`WsRuntime` (`app.state.ws`): what this process' /ws sessions share, and the hooks layers above fill in.

The planner sits above the WebSocket side: it sets `planner_sessions` and `submit_payload` here in its
lifespan, so the sessions reach it through these protocols without importing it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from api.ws.agent_session import FrameLanes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from api.ws.agent_status import AgentStatusFeed
    from api.ws.events import WatchEvent
    from api.ws.fanout import Fanout
    from api.ws.registry import SessionRegistry
    from scheduler.types import InboxEntry

__all__ = ("PlannerSessions", "SessionWatcher", "SubmitPayload", "WsRuntime")


class SessionWatcher(Protocol):
    """A client socket watching planner sessions."""

    def deliver_session_event(self, event: WatchEvent) -> None: ...

    def request_close(self, code: int, reason: str) -> None: ...


class PlannerSessions(Protocol):
    """What a client socket asks of the planner's session feed."""

    async def watch(self, watcher: SessionWatcher, user_id: str, session_id: int) -> bool: ...

    def unwatch(self, watcher: SessionWatcher, session_id: int) -> None: ...

    def unwatch_all(self, watcher: SessionWatcher) -> None: ...


class SubmitPayload(Protocol):
    """`(agent id, inbox entry) -> the submit payload to send` (the planner seals LLM settings into it)."""

    def __call__(self, agent_id: str, entry: InboxEntry) -> Awaitable[bytes]: ...


@dataclass(slots=True)
class WsRuntime:
    """`app.state.ws`: this process' sessions, its fan-out listener, and its node id (inbox consumer names)."""

    registry: SessionRegistry
    lanes: FrameLanes = field(default_factory=lambda: FrameLanes.of(16))
    """Bounds on agent frames handled at once, shared by every agent socket of this process."""
    fanout: Fanout | None = None
    agent_feed: AgentStatusFeed | None = None
    node_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    open_connections: Counter[str] = field(default_factory=Counter)
    on_change: Callable[[str, int], None] | None = None
    """Called with (role, open count) after every change (the metrics gauge hooks in here)."""
    planner_sessions: PlannerSessions | None = None
    """The planner's session feed (`subscribe {sessionId}`), set by the planner's lifespan when it runs."""
    submit_payload: SubmitPayload | None = None
    """The planner's hook giving an agent the submit payload to send (it seals users' LLM settings)."""

    def agent_changed(self) -> None:
        """An agent socket opened or closed here: `agent/status` watchers hear about it without waiting."""
        if self.agent_feed is not None:
            self.agent_feed.poke()

    def connection_opened(self, role: str) -> None:
        self.open_connections[role] += 1
        self._changed(role)

    def connection_closed(self, role: str) -> None:
        self.open_connections[role] -= 1
        self._changed(role)

    def _changed(self, role: str) -> None:
        if self.on_change is not None:
            self.on_change(role, self.open_connections[role])
