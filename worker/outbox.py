"""Frames waiting for the server: the ack-tracked outbox and the ordered send queue. No I/O, no clock of its own.

The outbox holds every frame that must reach the server (accept, result, error) until it is acknowledged,
across reconnects. The send queue is the write path of one connection: FIFO, so a task's accept, progress
and result leave in that order, with a bound on waiting progress frames (the overflow policy drops new
progress, never a control frame).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ("FrameKind", "Outbox", "PendingFrame", "RecentRefs", "SendQueue", "TaskKey")

TaskKey = tuple[str, int]
"""(task id, attempt): the unit of deduplication and fencing."""

FrameKind = Literal["accept", "result", "error"]
TERMINAL_KINDS: frozenset[FrameKind] = frozenset({"result", "error"})


@dataclass(slots=True)
class PendingFrame:
    """One unacknowledged frame; `sent_at` is when it was last written (None: queued, not written yet)."""

    frame_id: str
    key: TaskKey
    kind: FrameKind
    data: bytes
    sent_at: float | None = None


class Outbox:
    """Unacknowledged frames by envelope id, in the order they were added, indexed by task attempt."""

    def __init__(self) -> None:
        self._frames: dict[str, PendingFrame] = {}
        self._by_key: dict[TaskKey, list[str]] = {}

    def add(self, frame: PendingFrame) -> None:
        """Track a frame until it is acknowledged."""
        self._frames[frame.frame_id] = frame
        self._by_key.setdefault(frame.key, []).append(frame.frame_id)

    def get(self, frame_id: str) -> PendingFrame | None:
        """The pending frame with this id, if any."""
        return self._frames.get(frame_id)

    def ack(self, frame_id: str) -> PendingFrame | None:
        """Drop the acknowledged frame; an acked result/error also settles the task's earlier frames."""
        frame = self._frames.pop(frame_id, None)
        if frame is None:
            return None
        if frame.kind in TERMINAL_KINDS:
            self.purge(frame.key)
        else:
            ids = self._by_key.get(frame.key, [])
            if frame_id in ids:
                ids.remove(frame_id)
            if not ids:
                self._by_key.pop(frame.key, None)
        return frame

    def purge(self, key: TaskKey) -> int:
        """Drop every frame about one task attempt (fenced, cancelled or settled); return how many."""
        dropped = 0
        for fid in self._by_key.pop(key, []):
            if self._frames.pop(fid, None) is not None:
                dropped += 1
        return dropped

    def has_terminal(self, key: TaskKey) -> bool:
        """True when a result or error for `key` waits for its ack."""
        return any(self._frames[fid].kind in TERMINAL_KINDS for fid in self._by_key.get(key, ()) if fid in self._frames)

    def all(self) -> list[PendingFrame]:
        """Every pending frame, oldest first (the order to resend them in after a reconnect)."""
        return list(self._frames.values())

    def due(self, now: float, interval_s: float) -> list[PendingFrame]:
        """Frames written at least `interval_s` ago and still unacknowledged, oldest first.

        An accept is skipped once its task's result/error is pending: resending it after the result would
        reach the server out of order.
        """
        due: list[PendingFrame] = []
        for frame in self._frames.values():
            if frame.sent_at is None or now - frame.sent_at < interval_s:
                continue
            if frame.kind == "accept" and self.has_terminal(frame.key):
                continue
            due.append(frame)
        return due

    def __len__(self) -> int:
        return len(self._frames)

    def __bool__(self) -> bool:
        return bool(self._frames)


@dataclass(slots=True)
class _Item:
    data: bytes
    frame_id: str | None
    is_progress: bool
    is_stream: bool = False


@dataclass(slots=True)
class SendQueue:
    """The frames one connection still has to write, FIFO; heartbeats jump the line.

    Overflow policy for progress: when `progress_limit` progress frames already wait, a new one is refused
    (the caller drops it). Control frames are never refused; their number is bounded by the running tasks.
    Stream pieces are never refused either: their producers wait while `streams` is at their limit.
    """

    progress_limit: int
    _items: deque[_Item] = field(default_factory=deque)
    _progress: int = 0
    streams: int = 0
    """Stream pieces waiting to be written."""

    def put(self, data: bytes, *, frame_id: str | None = None) -> None:
        """Queue a control frame (accept, result, error)."""
        self._items.append(_Item(data, frame_id, is_progress=False))

    def put_urgent(self, data: bytes) -> None:
        """Queue a frame ahead of everything (heartbeats: no ordering with task frames)."""
        self._items.appendleft(_Item(data, None, is_progress=False))

    def put_progress(self, data: bytes) -> bool:
        """Queue a progress frame unless the progress backlog is full; True when queued."""
        if self._progress >= self.progress_limit:
            return False
        self._items.append(_Item(data, None, is_progress=True))
        self._progress += 1
        return True

    def put_stream(self, data: bytes) -> None:
        """Queue a stream piece (in order with the task's other frames)."""
        self._items.append(_Item(data, None, is_progress=False, is_stream=True))
        self.streams += 1

    def pop(self) -> tuple[bytes, str | None] | None:
        """The next frame to write and its tracked id, or None when empty."""
        if not self._items:
            return None
        item = self._items.popleft()
        if item.is_progress:
            self._progress -= 1
        elif item.is_stream:
            self.streams -= 1
        return item.data, item.frame_id

    def peek_size(self) -> int | None:
        """Bytes of the next frame `pop()` would return, or None when empty."""
        return len(self._items[0].data) if self._items else None

    def clear(self) -> None:
        """Forget everything (the connection is gone; the outbox refills the next one)."""
        self._items.clear()
        self._progress = 0
        self.streams = 0

    def __len__(self) -> int:
        return len(self._items)


class RecentRefs:
    """A bounded map of recently sent frame ids to their task, to place an `error` frame's `ref`."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._refs: OrderedDict[str, TaskKey] = OrderedDict()

    def add(self, frame_id: str, key: TaskKey) -> None:
        """Remember that `frame_id` was about `key`, forgetting the oldest past the limit."""
        self._refs[frame_id] = key
        while len(self._refs) > self._limit:
            self._refs.popitem(last=False)

    def get(self, frame_id: str) -> TaskKey | None:
        """The task a recent frame was about, if still remembered."""
        return self._refs.get(frame_id)
