"""What the WebSocket side delivers to sessions: encoded once, shared by every session that may see it.

Kept apart from the feeds that make them (fan-out, agent status) so the session registry and the
planner's session feed can name them without importing those feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("AgentStatusEvent", "WatchEvent")


@dataclass(frozen=True, slots=True)
class AgentStatusEvent:
    """One `agent/status` frame, encoded once and shared, with what decides who may see it."""

    agent_id: str
    owner_id: str
    is_public: bool
    frame: str

    def visible_to(self, user_id: str, *, is_admin: bool) -> bool:
        return is_admin or self.is_public or self.owner_id == user_id


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One task event ready for watchers: the frame is encoded once and shared by every session."""

    task_id: str
    owner_id: str
    seq: int
    frame: str
