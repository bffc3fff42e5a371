"""Task events from Redis to this process' watchers: one pub/sub connection per API process.

Why one pattern subscription (`{P}:watch:*`) rather than a channel per connected user: it is set up
once at startup, so a new watcher only registers in memory before it reads the task's history —
there is no window between "history read" and "SUBSCRIBE confirmed" in which an event could fall
through — and admins watching everything need every owner's channel anyway. The price is that each
replica reads every event; dispatch drops an event without decoding its payload when no local
session wants it. The same connection listens to `{P}:control` (see control.py).

Pub/sub is at most once. If the connection breaks, every local watcher is closed with 1013 so it
reconnects and resumes from its `lastSeq` (history replay) instead of silently missing events.

No fan-out work when nobody watches: the scheduler scripts publish only while some API process says it
has client sockets or watchers (`{P}:watching`, one entry per process with an expiry; scheduler/presence.py).
A client socket is marked before its `auth/ok`, so anything it subscribes to is published from then on;
other watchers (the planner's task waiter) mark on subscribing. Each process refreshes its entry while it
has any, and removes it once it has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio
import redis.exceptions

from api.ws.control import apply_control
from api.ws.delivery import Delivery, give
from api.ws.events import WatchEvent, chunk_events
from api.ws.framing import CloseCode
from api.ws.pubsub import PubSubReader
from protocol.envelope import MESSAGE_TYPES, encode_raw_frame
from scheduler.keys import Keys
from scheduler.presence import clear_watching, mark_watching

if TYPE_CHECKING:
    from api.ws.registry import SessionRegistry, Watcher
    from protocol.envelope import MessageType

__all__ = ("Fanout", "WatchMessage", "event_from_payload")

logger = logging.getLogger(__name__)

_WATCHED_TYPES = frozenset({"task/status", "task/progress", "task/stream"})
_RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)
WATCHING_TTL_S = 30.0
"""How long this process' `{P}:watching` entry lasts unless refreshed."""
WATCHING_REFRESH_S = 10.0
SLICE_SESSIONS = 8
"""Session writers woken per loop turn (so other work, an agent's frames first, runs between slices).
Each woken writer sends its chunk in the next turn; 8 against 32 halved the agent's result-ack p99 while
1,000 sockets were fed through the ASGI send (docs/benchmarks.md); 4 was worse on both."""
SLICE_S = 0.001
"""Time one loop turn may spend writing chunks straight to transports (api/ws/direct.py) before the
loop's other work (an agent's frames) gets its turn."""


class WatchMessage(msgspec.Struct, rename="camel", frozen=True):
    """What the scheduler scripts PUBLISH on `{P}:watch:{ownerId}` (fields we don't read are ignored)."""

    type: str
    owner_id: str
    task_id: str
    seq: int
    payload: msgspec.Raw


_WATCH_DECODER = msgspec.json.Decoder(WatchMessage)
_PMESSAGE = frozenset({b"pmessage", "pmessage"})
_MESSAGE = frozenset({b"message", "message"})


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


class _FrameIds:
    """Envelope ids for watcher frames: a random UUID per process whose last 48 bits count up.

    Why not `uuid4()` per frame: with its `str()` it cost ~3 us, a tenth of the fan-out's work per event;
    an id only has to be unique, and stays a well-formed UUID as docs/protocol.md shows it.
    """

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        first = uuid.uuid4()
        self._prefix = str(first)[:24]
        self._n = first.int & 0xFFFF_FFFF_FFFF

    def next(self) -> str:
        self._n = (self._n + 1) & 0xFFFF_FFFF_FFFF
        return f"{self._prefix}{self._n:012x}"


def event_from_payload(message_type: str, task_id: str, owner_id: str, seq: int, payload_json: bytes) -> WatchEvent:
    """Wrap a stored event payload (history or pub/sub) as a watcher frame."""
    frame = encode_raw_frame(_checked_type(message_type), payload_json).decode()
    return WatchEvent(task_id=task_id, owner_id=owner_id, seq=seq, frame=frame)


def _checked_type(message_type: str) -> MessageType:
    if message_type not in _WATCHED_TYPES or message_type not in MESSAGE_TYPES:
        raise ValueError(f"not a watcher event type: {message_type!r}")
    return message_type  # type: ignore[return-value]


class Fanout:
    """Owns the process' pub/sub connection and its reader task; `start()`/`stop()` bracket it."""

    def __init__(self, redis: redis.asyncio.Redis, *, prefix: str, registry: SessionRegistry) -> None:
        self._redis = redis
        self._keys = Keys(prefix)
        self._registry = registry
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        """Set while the subscriptions are live (tests and startup wait on it)."""
        self._instance = uuid.uuid4().hex
        self._marked_until = 0.0
        """Monotonic time this process' `watching` entry runs out (0: not marked)."""
        self._mark_lock = asyncio.Lock()
        self._marking: set[asyncio.Task[None]] = set()
        self._pending: list[WatchEvent] = []
        """Events read since the current delivery round started; the next round takes them all."""
        self._round: deque[Delivery] = deque()
        """What the current round still has to hand to sessions, in order."""
        self._pump_scheduled = False
        self._ids = _FrameIds()
        registry.on_watch = self._on_watch

    # --- the `watching` mark -------------------------------------------------------------------

    def _wanted(self) -> bool:
        return self._registry.counts()[1] > 0 or self._registry.has_watchers()

    async def ensure_watching(self, *, refresh: bool = False) -> None:
        """Return once the scripts publish events (this process' mark is in Redis with most of its TTL left)."""
        if not refresh and time.monotonic() < self._marked_until - WATCHING_TTL_S / 2:
            return
        async with self._mark_lock:
            if not refresh and time.monotonic() < self._marked_until - WATCHING_TTL_S / 2:
                return
            until = time.monotonic() + WATCHING_TTL_S
            now_ms = int(time.time() * 1000)
            await mark_watching(self._redis, self._keys, self._instance, now_ms, int(WATCHING_TTL_S * 1000))
            self._marked_until = until

    def _on_watch(self) -> None:
        if time.monotonic() < self._marked_until - WATCHING_TTL_S / 2:
            return
        task = asyncio.get_running_loop().create_task(self._mark_quietly())
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    async def _mark_quietly(self) -> None:
        try:
            await self.ensure_watching()
        except (redis.exceptions.RedisError, OSError):
            logger.warning("could not mark this process as watching; the next refresh retries", exc_info=True)

    async def _keep_mark(self) -> None:
        """Refresh the mark while anything here watches; remove it once nothing does."""
        while True:
            await asyncio.sleep(WATCHING_REFRESH_S)
            try:
                if self._wanted():
                    await self.ensure_watching(refresh=True)
                elif self._marked_until:
                    async with self._mark_lock:
                        if not self._wanted():
                            self._marked_until = 0.0
                            await clear_watching(self._redis, self._keys, self._instance)
            except (redis.exceptions.RedisError, OSError):
                logger.warning("could not refresh the watching mark", exc_info=True)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, timeout_s: float = 10.0) -> None:
        """Start the reader and wait until the first subscription is confirmed."""
        self._task = asyncio.create_task(self._run(), name="ws-fanout")
        self._keeper = asyncio.create_task(self._keep_mark(), name="ws-fanout-watching")
        try:
            await asyncio.wait_for(self.ready.wait(), timeout_s)
        except TimeoutError:
            # Redis is down at startup: keep retrying in the background rather than failing the app.
            logger.warning("ws fan-out not subscribed after %.1f s; retrying in the background", timeout_s)

    async def stop(self) -> None:
        for task in (self._task, self._keeper, *self._marking):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._keeper = None
        if self._marked_until:
            self._marked_until = 0.0
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await clear_watching(self._redis, self._keys, self._instance)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError):
                logger.warning("ws fan-out connection lost; watchers will resume from lastSeq", exc_info=True)
            except Exception:
                logger.exception("ws fan-out reader failed; restarting it")
            self.ready.clear()
            self._registry_broken()
            delay = _RETRY_DELAYS_S[min(failures, len(_RETRY_DELAYS_S) - 1)]
            failures += 1
            await asyncio.sleep(delay)

    def _registry_broken(self) -> None:
        self._flush_all()
        for watcher in self._registry.all_watchers():
            watcher.request_close(CloseCode.TRY_AGAIN_LATER, "event stream interrupted; resubscribe with lastSeq")

    async def _listen(self) -> None:
        reader = PubSubReader(self._redis)
        try:
            early = await reader.subscribe(
                patterns=[self._keys.watch_pattern()], channels=[self._keys.control_channel()]
            )
            if self._wanted() or self._marked_until:
                # Redis may have restarted (the watchers were just closed): mark again before they return.
                await self.ensure_watching(refresh=True)
            self.ready.set()
            logger.info("ws fan-out subscribed to %s", self._keys.watch_pattern())
            self._handle_batch(early)
            while True:
                self._handle_batch(await reader.read())
        finally:
            with contextlib.suppress(Exception):
                await reader.close()

    def _handle_batch(self, replies: list[Any]) -> None:
        """Take what one socket read brought (pub/sub replies, in order); one delivery round is scheduled for all."""
        read = False
        for reply in replies:
            kind = reply[0]
            if kind in _PMESSAGE:
                # Not wanted when read: published before anyone here subscribed, so not owed to a later
                # subscriber (a task's replay reads its history after registering, and finds it there).
                event = self._decode(_as_bytes(reply[3]), wanted_only=True)
                if event is not None:
                    self._pending.append(event)
                    read = True
            elif kind in _MESSAGE:
                self._flush_all()  # events read before a control message reach the sessions before it acts
                apply_control(self._registry, _as_bytes(reply[2]))
        if read:
            self._schedule_pump()

    def _decode(self, raw: bytes, *, wanted_only: bool = False) -> WatchEvent | None:
        """The watcher event of a published message; with `wanted_only`, None when no session here wants it
        (the frame is then never encoded: every replica reads every owner's events)."""
        try:
            event = _WATCH_DECODER.decode(raw)
        except msgspec.DecodeError:
            logger.warning("dropping a malformed watch message (%d bytes)", len(raw))
            return None
        if wanted_only and not self._registry.wants(event.owner_id, event.task_id):
            return None
        try:
            frame = encode_raw_frame(_checked_type(event.type), bytes(event.payload), frame_id=self._ids.next())
        except ValueError:
            logger.warning("dropping a watch message of type %r task_id=%s", event.type, event.task_id)
            return None
        return WatchEvent(task_id=event.task_id, owner_id=event.owner_id, seq=event.seq, frame=frame.decode())

    # --- delivery rounds --------------------------------------------------------------------
    #
    # Why rounds and slices: a socket write costs microseconds (straight to the transport) to tens of them
    # (through a woken writer and the ASGI send). Handing a thousand sessions their events at once makes one
    # loop turn of a thousand writes, and every await of an agent's frame (its script call, its commit, its
    # ack) waits behind such turns. So a round hands out per loop turn what fits in SLICE_S, or until
    # SLICE_SESSIONS writers were woken, and events read meanwhile wait for the next round, which takes
    # them all: the busier the fan-out, the larger its chunks, the fewer its writes. Rounds run in order,
    # and a session writes directly only when nothing of its own is queued, so each session still gets
    # each task's events in order.

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self._round:
            events, self._pending = self._pending, []
            self._round.extend(self._group(events))
        self._hand_out(SLICE_SESSIONS)
        if self._round or self._pending:
            self._schedule_pump()

    def _flush_all(self) -> None:
        """Hand out everything read so far, now (before a control message acts, or the watchers are closed)."""
        self._hand_out(None)
        events, self._pending = self._pending, []
        self._round.extend(self._group(events))
        self._hand_out(None)

    def _hand_out(self, woken_budget: int | None) -> None:
        """Give sessions their share of the current round: all of them (budget None), or until
        `woken_budget` writers were woken or SLICE_S of this turn went by, whichever comes first."""
        if woken_budget is None:
            while self._round:
                delivery = self._round.popleft()
                for session in delivery.sessions[delivery.next :]:
                    give(session, delivery)
            return
        clock = time.perf_counter
        deadline = clock() + SLICE_S
        woken = 0
        while self._round:
            delivery = self._round[0]
            sessions = delivery.sessions
            index = delivery.next
            end = len(sessions)
            spent = False
            while index < end and not spent:
                woken += give(sessions[index], delivery)
                index += 1
                # A write to a loopback socket costs ~2 us per KiB in the kernel (the peer's receive path
                # runs in ours): a round's chunk of tens of KiB makes each write far dearer than the clock.
                spent = woken >= woken_budget or clock() > deadline
            delivery.next = index
            if index == end:
                self._round.popleft()
            if spent:
                return

    def _group(self, events: list[WatchEvent]) -> list[Delivery]:
        """Events (in publish order) grouped by who wants them.

        A task's events share their targets, so they sit in one group, in order; a group's events are
        cut into chunks once, for every session that takes chunks.
        """
        registry = self._registry
        of_task: dict[str, frozenset[Watcher]] = {}
        of_owner: dict[str, frozenset[Watcher]] = {}
        groups: dict[frozenset[Watcher], list[WatchEvent]] = {}
        for event in events:
            targets = of_task.get(event.task_id)
            if targets is None:
                if registry.task_watched(event.task_id):
                    targets = frozenset(registry.targets(event.owner_id, event.task_id))
                else:  # the usual case: the owner's watchers, the same set for all of the owner's tasks
                    targets = of_owner.get(event.owner_id)
                    if targets is None:
                        targets = of_owner[event.owner_id] = frozenset(registry.targets(event.owner_id, None))
                of_task[event.task_id] = targets
            if targets:
                groups.setdefault(targets, []).append(event)
        return [Delivery(list(targets), grouped, chunk_events(grouped)) for targets, grouped in groups.items()]

    def dispatch_raw(self, raw: bytes) -> int:
        """Deliver one published watch message now, after whatever was read before it; returns how many want it."""
        event = self._decode(raw)
        if event is None:
            return 0
        wanted = len(self._registry.targets(event.owner_id, event.task_id))
        self._pending.append(event)
        self._flush_all()
        return wanted
