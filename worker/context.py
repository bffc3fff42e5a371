"""TaskContext: what a handler sees of its task (ids, deadline, cancellation, progress, stream, resources).

It never sends anything itself: progress and stream pieces go to sinks the runtime (or `worker.testing`)
provides. It keeps the attempt's whole stream, so the runtime can resend it after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

from protocol.limits import MAX_MESSAGE_LENGTH, MAX_PROGRESS_BYTES
from worker.streaming import StreamPiece, StreamText

__all__ = ("ProgressSink", "ProgressUpdate", "StreamSink", "TaskContext")

logger = logging.getLogger(__name__)

R_co = TypeVar("R_co", covariant=True)

_PROGRESS_OVERHEAD_BYTES = 256
"""Room left in `MAX_PROGRESS_BYTES` for the payload's other fields (ids, attempt, keys)."""


class ProgressUpdate(msgspec.Struct, frozen=True):
    """One progress report: `data_json` is the encoded `data` (None when absent)."""

    data_json: bytes | None
    message: str | None


ProgressSink = Callable[[ProgressUpdate], bool]
"""Takes a progress update on the event loop's thread; returns False when it dropped it."""
StreamSink = Callable[[StreamPiece], Awaitable[None]]
"""Sends one stream piece (waiting while the write backlog is full); a piece it cannot send now is resent
later from the context's kept text."""


async def _no_stream(piece: StreamPiece) -> None:
    """The sink of a context built without one: the text is only kept."""


class TaskContext(Generic[R_co]):
    """The running task as its handler sees it.

    Attributes:
        task_id: the task's id.
        attempt: the dispatch attempt (1 for the first run); the fencing token of every frame.
        type: the task type.
        deadline: when the server times the task out (aware UTC), None when unknown.
        resources: what the agent's resources lifespan yielded (typed by the registry).
        credentials: the task owner's sealed LLM provider settings (`task/submit` `credentials`, only on
            trusted agents), opaque here; `worker.llm.credentials.unseal()` opens them. Never log it.
    """

    def __init__(
        self,
        *,
        task_id: str,
        attempt: int,
        task_type: str,
        resources: R_co,
        sink: ProgressSink,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float | None = None,
        stream_sink: StreamSink | None = None,
        credentials: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.type = task_type
        self.resources = resources
        # The wall-clock deadline is built only when read (`deadline`): most handlers never look.
        self._deadline_wall = time.time() + timeout_s if timeout_s is not None else None
        self._deadline_monotonic = time.monotonic() + timeout_s if timeout_s is not None else None
        self.credentials = credentials
        self._sink = sink
        self._stream_sink = stream_sink or _no_stream
        self._stream = StreamText()
        self._loop = loop
        # A plain flag, set once on the loop's thread and read from any (a sync handler polls it from its own);
        # the asyncio.Event for code that awaits the cancel is made only when someone does. Every task used to
        # build a threading.Event (a Condition and its lock) and an asyncio.Event that nearly none waits on.
        self._cancelled = False
        self._cancelled_async: asyncio.Event | None = None

    @property
    def deadline(self) -> datetime | None:
        """When the server times the task out (aware UTC), None when unknown."""
        if self._deadline_wall is None:
            return None
        return datetime.fromtimestamp(self._deadline_wall, UTC)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled (server cancel, fencing or shutdown). Safe from any thread.

        Async handlers are also cancelled through asyncio; sync handlers (run in a thread) must poll this.
        """
        return self._cancelled

    async def wait_cancelled(self) -> None:
        """Return once the task is cancelled."""
        if self._cancelled_async is None:
            self._cancelled_async = asyncio.Event()
            if self._cancelled:
                self._cancelled_async.set()
        await self._cancelled_async.wait()

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (may be negative), None when there is no deadline."""
        if self._deadline_monotonic is None:
            return None
        return self._deadline_monotonic - time.monotonic()

    async def progress(self, data: Any = None, message: str | None = None) -> bool:
        """Report progress. Best effort: may be dropped, never retried.

        A report is dropped (and False returned) when it is over the protocol's progress size limit, when
        the agent is disconnected, or when too many frames already wait to be written (backpressure: the
        worker keeps a bounded backlog and drops the newest reports rather than grow memory or block the
        handler). Watchers see every report that got through, in order.

        Args:
            data: any JSON-encodable value (dicts, lists, Structs, ...).
            message: a human-readable line, truncated to the protocol's message limit.

        Returns:
            True when the report was queued for sending.

        Raises:
            TypeError: `data` cannot be encoded as JSON.
        """
        update = self._build(data, message)
        return update is not None and self._sink(update)

    def progress_nowait(self, data: Any = None, message: str | None = None) -> bool:
        """Like `progress()`, callable from a sync handler's thread (or the loop). Same best-effort rules.

        From another thread the report is handed to the loop; True then means "handed over", not "queued".
        """
        update = self._build(data, message)
        if update is None:
            return False
        if _on_loop(self._loop):
            return self._sink(update)
        try:
            self._loop.call_soon_threadsafe(self._sink, update)
        except RuntimeError:  # the loop is closed: the worker is gone
            return False
        return True

    async def stream(self, text: str) -> None:
        """Append `text` to the attempt's text stream (e.g. LLM tokens); watchers get every piece, in order.

        Unlike progress nothing is dropped: long text is cut into pieces within the protocol's limits, each
        with its UTF-8 byte offset; while the worker is disconnected the text is kept and the whole stream is
        resent from offset 0 after the reconnect (the server keeps only what it lacks). Waits while the
        worker's write backlog is full, so a slow server slows the producer instead of growing memory. Put
        the full text in the result too: the server's replay history is bounded.
        """
        if not text:
            return
        for piece in self._stream.append(text):
            await self._stream_sink(piece)

    @property
    def streamed(self) -> str:
        """Everything `stream()` was given so far."""
        return self._stream.text

    def stream_pieces(self, offset: int = 0) -> list[StreamPiece]:
        """The pieces that resend the stream from byte `offset` (for the runtime after a reconnect or a gap)."""
        return self._stream.pieces_from(offset)

    def _build(self, data: Any, message: str | None) -> ProgressUpdate | None:
        data_json = msgspec.json.encode(data) if data is not None else None
        if message is not None and len(message) > MAX_MESSAGE_LENGTH:
            message = message[:MAX_MESSAGE_LENGTH]
        size = (len(data_json) if data_json else 0) + (len(message.encode()) if message else 0)
        if size > MAX_PROGRESS_BYTES - _PROGRESS_OVERHEAD_BYTES:
            logger.warning(
                "progress dropped: %d bytes over the limit",
                size,
                extra={"task_id": self.task_id, "attempt": self.attempt},
            )
            return None
        return ProgressUpdate(data_json, message)

    def mark_cancelled(self) -> None:
        """Mark the task cancelled. Called by the runtime on the loop's thread, not by handlers."""
        self._cancelled = True
        if self._cancelled_async is not None:
            self._cancelled_async.set()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
