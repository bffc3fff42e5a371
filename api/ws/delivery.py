"""One group of a fan-out round (api/ws/fanout.py): the sessions that want the same events, and the
hand-out of those events to one session, as shared chunks or one by one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.ws.direct import text_frame

if TYPE_CHECKING:
    from api.ws.events import EventChunk, WatchEvent
    from api.ws.registry import Watcher

__all__ = ("Delivery", "give")


@dataclass(eq=False, slots=True)
class Delivery:
    """One group of a round: its sessions, how far the round got through them, and what each gets."""

    sessions: list[Watcher]
    events: list[WatchEvent]
    chunks: list[EventChunk]
    next: int = 0
    wires: list[bytes] | None = None
    """Each chunk's WebSocket frame bytes, built on first use and written as is to every direct socket."""

    def wire(self, index: int) -> bytes:
        if self.wires is None:  # once per group, for all its sessions
            self.wires = [text_frame(chunk.text().encode()) for chunk in self.chunks]
        return self.wires[index]


def give(session: Watcher, delivery: Delivery) -> bool:
    """A session that takes chunks gets the group's chunks; any other its events one by one.

    True when the session's writer was woken (it sends on a later loop turn); False when everything
    went straight to its transport.
    """
    take = getattr(session, "take_chunk", None)
    chunks = delivery.chunks
    if take is not None:
        taken = take(chunks[0], delivery.wire(0))
        if taken is not None:
            woken: bool = taken == "queued"
            for index in range(1, len(chunks)):
                woken = take(chunks[index], delivery.wire(index)) == "queued" or woken
            return woken
    for event in delivery.events:
        session.deliver(event)
    return True
