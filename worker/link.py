"""The live link to the server: one connection's reader, writer, heartbeat and resend loops.

It owns the write path (one FIFO `SendQueue`, so a task's frames leave in order) and knows nothing about
tasks: the agent hands it encoded frames and gets decoded payloads back through a callback. Unacknowledged
frames live in the agent's `Outbox`; the link only resends them (after a reconnect, and when overdue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from protocol.envelope import SERVER_SENDS, decode_frame, encode_frame
from protocol.errors import ProtocolError
from protocol.limits import MAX_AGENT_FRAME_BYTES
from worker.outbox import SendQueue

if TYPE_CHECKING:
    from collections.abc import Callable

    from protocol.messages import Heartbeat, Message
    from worker.connection import AgentConnection
    from worker.outbox import Outbox

__all__ = ("Link", "cancel_and_wait", "wait_event")

logger = logging.getLogger(__name__)


class Link:
    """Serves one connection at a time with `serve()`; between connections, frames wait in the outbox.

    Args:
        outbox: the agent's unacknowledged frames (resent on every new connection, and when overdue).
        on_frame: called with each payload the server sends, on the loop, in order.
        heartbeat: builds the agent's current heartbeat.
        progress_backlog: most progress frames waiting to be written (more are refused).
        resend_interval_s: resend an unacknowledged frame this long after it was written.
        stream_backlog: stream pieces waiting to be written past which `send_stream()` waits.
        resend_first: on every new connection, the frames to send before the outbox (the running attempts'
            streams from offset 0, so they precede those attempts' results).
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        on_frame: Callable[[Message], None],
        heartbeat: Callable[[], Heartbeat],
        progress_backlog: int,
        resend_interval_s: float,
        stream_backlog: int = 1024,
        resend_first: Callable[[], list[bytes]] | None = None,
    ) -> None:
        self._outbox = outbox
        self._stream_backlog = stream_backlog
        self._resend_first = resend_first
        self._stream_room = asyncio.Event()
        self._stream_room.set()
        self._on_frame = on_frame
        self._heartbeat = heartbeat
        self._resend_interval_s = resend_interval_s
        self._queue = SendQueue(progress_limit=progress_backlog)
        self._ready = asyncio.Event()
        self._heartbeat_due = asyncio.Event()
        self._written: dict[str, asyncio.Future[None]] = {}
        self._conn: AgentConnection | None = None
        self.heartbeat_interval_s = 10.0
        """Seconds between heartbeats; from `auth/ok`, updated by the server's `heartbeat` frames."""
        self.connected = asyncio.Event()
        """Set while an authenticated connection is up."""
        self.alive_at = time.monotonic()
        """Monotonic time of the last sign of life: a frame from the server, a connection served or tried.

        The agent's watchdog reads it: a link silent past its bound is hung, whatever the reason."""

    def note_alive(self) -> None:
        """Record progress that is not a server frame (a connection attempt)."""
        self.alive_at = time.monotonic()

    @property
    def is_up(self) -> bool:
        """True while a connection is being served."""
        return self._conn is not None

    def send_tracked(self, frame_id: str, data: bytes) -> None:
        """Write an outbox frame now if connected; otherwise the next connection sends it from the outbox."""
        if self._conn is not None:
            self._queue.put(data, frame_id=frame_id)
            self._ready.set()

    def send_progress(self, data: bytes) -> bool:
        """Queue a progress frame; False (dropped) when disconnected or the progress backlog is full."""
        if self._conn is None or not self._queue.put_progress(data):
            return False
        self._ready.set()
        return True

    async def send_stream(self, data: bytes) -> bool:
        """Queue a stream piece, first waiting while `stream_backlog` pieces wait to be written.

        Returns False (not sent) when disconnected, also when the connection drops while waiting: the
        caller's stream is resent whole on the next connection.
        """
        while self._conn is not None and self._queue.streams >= self._stream_backlog:
            self._stream_room.clear()
            await self._stream_room.wait()
        if self._conn is None:
            return False
        self._queue.put_stream(data)
        self._ready.set()
        return True

    def send_stream_nowait(self, data: bytes) -> bool:
        """Queue a stream piece without waiting for room (a resend the server asked for); False when down."""
        if self._conn is None:
            return False
        self._queue.put_stream(data)
        self._ready.set()
        return True

    def heartbeat_now(self) -> None:
        """Send a heartbeat at once (load or draining changed), then keep the usual rhythm."""
        self._heartbeat_due.set()

    def set_heartbeat_interval(self, interval_s: float) -> None:
        """Adopt the interval the server asks for."""
        if interval_s != self.heartbeat_interval_s:
            self.heartbeat_interval_s = interval_s
            self._heartbeat_due.set()

    async def until_written(self, frame_id: str, timeout_s: float) -> None:
        """Wait up to `timeout_s` until a queued frame is on the wire; at once when disconnected."""
        if self._conn is None:
            return
        waiter = self._written.setdefault(frame_id, asyncio.get_running_loop().create_future())
        try:
            # asyncio.wait, not wait_for: 3.11's wait_for swallows a cancel that races a finished waiter.
            done, _ = await asyncio.wait({waiter}, timeout=timeout_s)
            if not done:
                logger.debug("frame not written within %.1f s; going on", timeout_s)
        finally:
            self._written.pop(frame_id, None)

    async def serve(self, conn: AgentConnection) -> None:
        """Run the connection's loops until it fails.

        Raises:
            ConnectionLostError: the connection closed (the caller reconnects).
        """
        self.heartbeat_interval_s = conn.auth.heartbeat_interval_s
        self._queue.clear()
        for data in self._resend_first() if self._resend_first is not None else ():
            self._queue.put_stream(data)
        for pending in self._outbox.all():  # resend everything unacknowledged, oldest first
            pending.sent_at = None
            self._queue.put(pending.data, frame_id=pending.frame_id)
        self._conn = conn
        self.note_alive()
        self.connected.set()
        loops = [
            asyncio.create_task(self._reader(conn), name="agent-reader"),
            asyncio.create_task(self._writer(conn), name="agent-writer"),
            asyncio.create_task(self._heartbeats(), name="agent-heartbeats"),
            asyncio.create_task(self._resender(), name="agent-resender"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()
        finally:
            self._conn = None
            self.connected.clear()
            self._stream_room.set()  # waiting producers give up; their streams go again on reconnect
            for waiter in self._written.values():  # nothing more is written on this connection
                if not waiter.done():
                    waiter.set_result(None)
            self._written.clear()
            await cancel_and_wait(*loops)
            with contextlib.suppress(Exception):
                await conn.close()

    async def _reader(self, conn: AgentConnection) -> None:
        while True:
            raw = await conn.recv()
            try:
                frame = decode_frame(raw, max_bytes=MAX_AGENT_FRAME_BYTES, accept=SERVER_SENDS)
            except ProtocolError as exc:
                logger.warning("unreadable frame from the server: %s", exc.message)
                continue
            self.alive_at = time.monotonic()
            self._on_frame(frame.payload)

    async def _writer(self, conn: AgentConnection) -> None:
        while True:
            item = self._queue.pop()
            if item is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            data, frame_id = item
            await conn.send(data)
            if frame_id is not None:
                self._mark_written(frame_id)
            if not self._stream_room.is_set() and self._queue.streams < self._stream_backlog:
                self._stream_room.set()

    def _mark_written(self, frame_id: str) -> None:
        pending = self._outbox.get(frame_id)
        if pending is not None:
            pending.sent_at = time.monotonic()
        waiter = self._written.pop(frame_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _heartbeats(self) -> None:
        while True:
            self._queue.put_urgent(encode_frame(self._heartbeat()))
            self._ready.set()
            self._heartbeat_due.clear()
            await wait_event(self._heartbeat_due, self.heartbeat_interval_s)

    async def _resender(self) -> None:
        while True:
            await asyncio.sleep(self._resend_interval_s / 2)
            for pending in self._outbox.due(time.monotonic(), self._resend_interval_s):
                pending.sent_at = None
                self._queue.put(pending.data, frame_id=pending.frame_id)
                self._ready.set()


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes; True when set. A cancel always raises.

    Unlike `asyncio.wait_for(event.wait(), ...)` on Python 3.11, which returns normally (the cancel lost)
    when the event is set in the same loop step as the cancel arrives: a loop built on that never ends.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout_s)
    finally:
        if not waiter.done():
            waiter.cancel()
    return event.is_set()


RECANCEL_EVERY_S = 1.0
"""A task still running this long after its cancel is cancelled again (it may have swallowed the first)."""
ABANDON_AFTER_S = 30.0
"""Past this, `cancel_and_wait` logs the tasks that will not stop and returns without them."""


async def cancel_and_wait(*tasks: asyncio.Task[Any], abandon_after_s: float = ABANDON_AFTER_S) -> None:
    """Cancel tasks and wait until they are done, whatever they raise; never forever.

    A task that swallowed its cancel (a library's `wait_for`, a broad `except`) is cancelled again each
    `RECANCEL_EVERY_S`; one still running after `abandon_after_s` is logged and left behind, so the
    caller (and with it the reconnect) goes on.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + abandon_after_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, max(deadline - loop.time(), 0.0)))
        if pending and loop.time() >= deadline:
            names = ", ".join(sorted(task.get_name() for task in pending))
            logger.error("task(s) did not stop within %.0f s of their cancel; left behind: %s", abandon_after_s, names)
            break
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a cancelled loop's error is not worth a "never retrieved" warning
