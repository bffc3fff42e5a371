"""A watcher's socket (`role=client`): subscribe/unsubscribe, history replay, live task events.

Per task, events leave in `seq` order with no duplicate: live events that arrive while a replay is
read are held back, merged with the history and deduplicated by seq. Everything the session sends
goes through one bounded outbox (bounded in frames); when a slow reader lets it fill, the socket is
closed with 4008 rather than letting server memory grow. A client that negotiated `batch` gets whatever
the outbox holds when its writer wakes as one `batch` frame (the frames as they are, in queue order):
one socket write for many events, so a watcher that falls behind catches up in fewer, larger writes.

Such a client, while it watches only `all` (no single task, no planner session, never a replay), takes
the fan-out's shared chunks (`take_chunk`): one outbox entry per chunk of events instead of one per event,
and when the chunk is all its writer has, it sends the chunk's text, encoded once for every socket. Its
live events then come from the one pub/sub reader only, once each and in seq order, so no dedupe is due;
the dedupe memory still moves, for when it later subscribes to more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

import redis.exceptions
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from api.db.models.tasks import Task
from api.ws.events import MAX_BATCH_CHARS, MAX_BATCH_ITEMS, EventChunk, batch_text
from api.ws.framing import CloseCode, SessionClosed, ViolationBudget
from api.ws.replay import replay_events
from api.ws.session import Session
from protocol.envelope import CLIENT_SENDS, decode_batch, encode_frame
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import FEATURE_BATCH, Ack, Batch, ErrorFrame, Heartbeat, Subscribe, Unsubscribe

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.auth.identity import CurrentUser
    from api.settings import WsSettings
    from api.ws.agent_status import AgentStatusFeed
    from api.ws.events import AgentStatusEvent, WatchEvent
    from api.ws.framing import FrameSocket
    from api.ws.registry import SessionRegistry
    from api.ws.runtime import PlannerSessions
    from protocol.envelope import Frame
    from protocol.messages import Message
    from scheduler.client import SchedulerClient

__all__ = ("ClientSession",)

logger = logging.getLogger(__name__)

MAX_TRACKED_TASKS = 10_000
"""Tasks whose last sent seq a session remembers (the least recently sent to first out); an evicted
task's next event is sent as is."""
MAX_TASK_SUBSCRIPTIONS = 1000
"""Single-task subscriptions one socket may hold (`all: true` covers any number)."""
_TRANSIENT = (redis.exceptions.RedisError, OSError, SQLAlchemyError)


class ClientSession(Session):
    """One client socket. `deliver()` is called synchronously by the fan-out; the rest runs on its loops."""

    role = "client"

    def __init__(
        self,
        conn: FrameSocket,
        session_id: str,
        *,
        user: CurrentUser,
        registry: SessionRegistry,
        scheduler: SchedulerClient,
        db: async_sessionmaker[AsyncSession],
        settings: WsSettings,
        agent_feed: AgentStatusFeed | None = None,
        planner_sessions: PlannerSessions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(conn, session_id)
        self.user = user
        self._registry = registry
        self._scheduler = scheduler
        self._db = db
        self._settings = settings
        self._clock = clock
        self._agent_feed = agent_feed
        self._planner_sessions = planner_sessions
        self._outbox: deque[str | EventChunk] = deque()
        self._queued = 0
        """Frames in the outbox (a chunk counts its events): what the backlog cap bounds."""
        self._backlog_cap = max(1, settings.send_backlog)
        self._wake = asyncio.Event()
        self._simple = True
        """Never watched a single task or a planner session (so never replayed): may take shared chunks."""
        self._tasks: set[str] = set()
        self._all = False
        self._last_seq: dict[str, int] = {}
        """Per task, the last seq sent, in about the order last sent (a plain dict: its bulk update is
        several times cheaper than an OrderedDict's, and a chunk updates one per task it carries)."""
        self._replaying: dict[str, list[WatchEvent]] = {}
        self._rate = ViolationBudget(settings.client_messages_per_minute, 60.0, time.monotonic)

    def log_context(self) -> dict[str, Any]:
        return {**super().log_context(), "user_id": self.user.id}

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        return [self._read_loop(), self._write_loop()]

    # --- outgoing -------------------------------------------------------------------------

    def deliver(self, event: WatchEvent) -> None:
        """Take one live event (from the fan-out); never blocks."""
        if not self._wants(event):
            return
        held = self._replaying.get(event.task_id)
        if held is not None:
            held.append(event)
            if len(held) > self._backlog_cap:
                self.request_close(CloseCode.LAGGED, "send backlog over its cap")
            return
        self._push_event(event)

    def deliver_agent_status(self, event: AgentStatusEvent) -> None:
        """Take one `agent/status` (from the agent status feed); never blocks."""
        if self._all and event.visible_to(self.user.id, is_admin=self.user.is_admin):
            self._enqueue(event.frame)

    def _wants(self, event: WatchEvent) -> bool:
        if event.task_id in self._tasks:
            return True
        return self._all and (self.user.is_admin or event.owner_id == self.user.id)

    def _push_event(self, event: WatchEvent) -> None:
        last = self._last_seq.get(event.task_id)
        if last is not None and event.seq <= last:
            return
        if last is not None:
            del self._last_seq[event.task_id]  # to the end: most recently sent
        self._last_seq[event.task_id] = event.seq
        if len(self._last_seq) > MAX_TRACKED_TASKS:
            del self._last_seq[next(iter(self._last_seq))]
        self._enqueue(event.frame)

    def take_chunk(self, chunk: EventChunk, wire: bytes | None = None) -> Literal["queued", "written"] | None:
        """Take a chunk of live events from the fan-out as one outbox entry; None: deliver them one by one.

        Only while this session watches `all` and nothing else, with `batch` negotiated: then it wants
        every event the fan-out groups for it, and none can be a duplicate (see the module docstring).
        With `wire` (the chunk's frame bytes, built once for every socket) and nothing queued before it,
        the chunk is written to the transport now: no outbox entry, no writer woken.
        """
        if not (self._simple and self._all and not self._tasks and self._batches()):
            return None
        last = self._last_seq
        last.update(chunk.last_seq)
        while len(last) > MAX_TRACKED_TASKS:
            del last[next(iter(last))]
        if wire is not None and not self._outbox and self.conn.write_now(wire):
            return "written"
        self._enqueue(chunk, len(chunk.frames))
        return "queued"

    def _batches(self) -> bool:
        return self.features is not None and FEATURE_BATCH in self.features

    def _enqueue(self, item: str | EventChunk, frames: int = 1) -> None:
        if self._queued + frames > self._backlog_cap:
            self.request_close(CloseCode.LAGGED, "send backlog over its cap")
            return
        self._outbox.append(item)
        self._queued += frames
        self._wake.set()

    def _reply(self, message: Message) -> None:
        self._enqueue(encode_frame(message).decode())

    async def _write_loop(self) -> None:
        batches = self._batches()
        outbox = self._outbox
        while True:
            while not outbox:
                self._wake.clear()
                await self._wake.wait()
            item = outbox.popleft()
            if not batches or not outbox:
                # Alone (the usual case under load: one chunk, whose text every socket shares).
                self._queued -= len(item.frames) if isinstance(item, EventChunk) else 1
                await self.conn.send_text(item if isinstance(item, str) else item.text())
                continue
            # Behind: whatever fits in one `batch` frame, in order (a single oversized frame goes alone).
            frames = list(item.frames) if isinstance(item, EventChunk) else [item]
            size = item.chars if isinstance(item, EventChunk) else len(item)
            while outbox:
                following = outbox[0]
                more = following.frames if isinstance(following, EventChunk) else [following]
                more_chars = following.chars if isinstance(following, EventChunk) else len(following)
                if len(frames) + len(more) > MAX_BATCH_ITEMS or size + more_chars > MAX_BATCH_CHARS:
                    break
                outbox.popleft()
                frames += more
                size += more_chars
            self._queued -= len(frames)
            await self.conn.send_text(batch_text(frames) if len(frames) > 1 else frames[0])

    # --- incoming -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            frame = await self._receive()
            if frame is None:
                continue
            if not isinstance(frame.payload, Batch):
                await self._serve(frame)
                continue
            # Each item as if it came alone, in order; a bad item is refused by its id.
            for item in decode_batch(frame, accept=CLIENT_SENDS):
                if isinstance(item, ProtocolError):
                    await self.conn.reject(item.code, item.message, details=item.details, ref=item.ref)
                else:
                    await self._serve(item)

    async def _serve(self, frame: Frame) -> None:
        if self._rate.spend():
            await self.conn.reject(
                ErrorCode.RATE_LIMITED,
                f"more than {self._settings.client_messages_per_minute} messages per minute",
                ref=frame.id,
            )
            return
        try:
            await self._handle(frame)
        except _TRANSIENT:
            logger.warning("%s not served (storage error)", frame.type, extra=self.log_context(), exc_info=True)
            self._reply(ErrorFrame.of(ErrorCode.SERVICE_UNAVAILABLE, "temporarily unavailable", ref=frame.id))

    def detach(self) -> None:
        """Drop this session's subscriptions from the registry (called once, when the socket ends)."""
        for task_id in self._tasks:
            self._registry.unwatch_task(task_id, self)
        self._registry.unwatch_owner(self.user.id, self)
        self._registry.unwatch_everything(self)
        if self._planner_sessions is not None:
            self._planner_sessions.unwatch_all(self)

    async def _receive(self) -> Frame | None:
        expires_in = self.user.token_exp - self._clock()
        if expires_in <= 0:
            raise SessionClosed(CloseCode.POLICY_VIOLATION, "token expired")
        # Whichever comes first: the token's expiry (1008) or the idle timeout (4408).
        expiry_first = expires_in <= self._settings.idle_timeout_s
        try:
            return await self.conn.receive(min(self._settings.idle_timeout_s, expires_in))
        except TimeoutError:
            if expiry_first:
                raise SessionClosed(CloseCode.POLICY_VIOLATION, "token expired") from None
            raise SessionClosed(CloseCode.IDLE, "idle timeout") from None

    async def _handle(self, frame: Frame) -> None:
        payload = frame.payload
        if isinstance(payload, Subscribe):
            await self._subscribe(frame.id, payload)
        elif isinstance(payload, Unsubscribe):
            self._unsubscribe(frame.id, payload)
        elif isinstance(payload, Heartbeat):
            return
        else:  # decode_frame already refuses types outside CLIENT_SENDS; keep the session safe anyway
            await self.conn.reject(ErrorCode.VALIDATION_ERROR, "clients may not send this type", ref=frame.id)

    async def _subscribe(self, ref: str, sub: Subscribe) -> None:
        if sub.session_id is not None:
            await self._subscribe_session(ref, sub.session_id)
            return
        if sub.all:
            if self.user.is_admin:
                self._registry.watch_everything(self)
            else:
                self._registry.watch_owner(self.user.id, self)
            first = not self._all
            self._all = True
            self._reply(Ack(ref=ref))
            if first and self._agent_feed is not None:
                self._agent_feed.watcher_added(self)
            return
        task_id = sub.task_id
        if task_id is None:  # Subscribe's own check makes this unreachable
            return
        self._simple = False
        if task_id not in self._tasks and len(self._tasks) >= MAX_TASK_SUBSCRIPTIONS:
            self._reply(
                ErrorFrame.of(
                    ErrorCode.VALIDATION_ERROR,
                    f"at most {MAX_TASK_SUBSCRIPTIONS} task subscriptions per socket; use all: true",
                    details={"field": "$.payload.taskId"},
                    ref=ref,
                )
            )
            return
        owner_id = await self._visible_owner(task_id)
        if owner_id is None:
            # Same answer for another user's task and for a random id: existence is not revealed.
            self._reply(ErrorFrame.of(ErrorCode.NOT_FOUND, "task not found", ref=ref))
            return
        self._tasks.add(task_id)
        self._registry.watch_task(task_id, self)
        if sub.last_seq is None:
            self._reply(Ack(ref=ref))
            return
        await self._replay(ref, task_id, owner_id, sub.last_seq)

    async def _replay(self, ref: str, task_id: str, owner_id: str, last_seq: int) -> None:
        # Live events for this task are held while the history is read, then merged by seq.
        self._replaying[task_id] = []
        try:
            replayed = await replay_events(
                self._scheduler, self._db, task_id=task_id, owner_id=owner_id, after_seq=last_seq
            )
        finally:
            held = self._replaying.pop(task_id, [])
        self._reply(Ack(ref=ref))
        self._last_seq[task_id] = last_seq
        for event in sorted([*replayed, *held], key=lambda e: e.seq):
            self._push_event(event)

    async def _visible_owner(self, task_id: str) -> str | None:
        """The task's owner when this user may watch it, else None (unknown and foreign look the same)."""
        async with self._db() as session:
            owner_id = await session.scalar(select(Task.owner_id).where(Task.id == task_id))
        if owner_id is None or not (self.user.is_admin or owner_id == self.user.id):
            return None
        return str(owner_id)

    def _unsubscribe(self, ref: str, unsub: Unsubscribe) -> None:
        if unsub.all:
            self._registry.unwatch_owner(self.user.id, self)
            self._registry.unwatch_everything(self)
            self._all = False
        elif unsub.task_id is not None:
            self._registry.unwatch_task(unsub.task_id, self)
            self._tasks.discard(unsub.task_id)
        elif unsub.session_id is not None and self._planner_sessions is not None:
            self._planner_sessions.unwatch(self, unsub.session_id)
        self._reply(Ack(ref=ref))

    # --- planner sessions (`subscribe {sessionId}`; the routing lives in api/planner/live.py) ----------

    async def _subscribe_session(self, ref: str, session_id: int) -> None:
        self._simple = False
        feed = self._planner_sessions
        found = feed is not None and await feed.watch(self, self.user.id, session_id)
        self._reply(Ack(ref=ref) if found else ErrorFrame.of(ErrorCode.NOT_FOUND, "session not found", ref=ref))

    def deliver_session_event(self, event: WatchEvent) -> None:
        """Take one event of a watched planner session's task (from the planner's feed); never blocks."""
        self._push_event(event)
