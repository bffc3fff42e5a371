"""What the WebSocket side delivers to sessions: encoded once, shared by every session that may see it.

Kept apart from the feeds that make them (fan-out, agent status) so the session registry and the
planner's session feed can name them without importing those feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.envelope import encode_raw_frame

__all__ = (
    "MAX_BATCH_CHARS",
    "MAX_BATCH_ITEMS",
    "AgentStatusEvent",
    "EventChunk",
    "WatchEvent",
    "batch_text",
    "chunk_events",
)


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


MAX_BATCH_ITEMS = 1000
"""Frames per `batch` frame sent to a client (the protocol's bound)."""
MAX_BATCH_CHARS = 256 * 1024
"""Characters of frames per `batch` frame sent to a client (a single larger frame still goes alone)."""


def batch_text(frames: list[str]) -> str:
    """One `batch` frame carrying already encoded frames as its items (an item may keep its `ts`)."""
    return encode_raw_frame("batch", ('{"frames":[' + ",".join(frames) + "]}").encode()).decode()


@dataclass(eq=False, slots=True)
class EventChunk:
    """Task events the fan-out read in one loop turn for one set of watchers, shared by all of them.

    Why: with many sockets watching the same tasks, the per-socket cost is one queue entry per chunk
    rather than one per event, and a socket that sends the chunk alone sends the text every other
    socket sends (encoded once, on first use). Within the bounds of one `batch` frame.
    """

    frames: list[str]
    chars: int
    last_seq: dict[str, int]
    """Each task's highest seq in the chunk (what the session's dedupe memory moves to)."""
    _text: str | None = None

    def text(self) -> str:
        if self._text is None:
            self._text = batch_text(self.frames) if len(self.frames) > 1 else self.frames[0]
        return self._text


def chunk_events(events: list[WatchEvent]) -> list[EventChunk]:
    """Split events (in order) into chunks within one `batch` frame's bounds."""
    chunks: list[EventChunk] = []
    frames: list[str] = []
    last: dict[str, int] = {}
    chars = 0
    for event in events:
        size = len(event.frame)
        if frames and (len(frames) >= MAX_BATCH_ITEMS or chars + size > MAX_BATCH_CHARS):
            chunks.append(EventChunk(frames, chars, last))
            frames, last, chars = [], {}, 0
        frames.append(event.frame)
        last[event.task_id] = event.seq
        chars += size
    if frames:
        chunks.append(EventChunk(frames, chars, last))
    return chunks
