"""An agent's socket (`role=agent`): presence, inbox delivery, and the agent's task frames.

Liveness never waits on the database: the read loop only reads. Heartbeats are handled inline at
once; task frames of different tasks run side by side, those of one task in arrival order: a task with
a frame in flight queues its later frames behind it, and one handler task drains that queue (no task
per frame). A progress frame whose task is idle joins the turn's batched script call from the reader
and is answered in a callback, without any task. The lanes are process-wide (`FrameLanes`), so an
accept never waits behind commits. The presence lease is renewed on every heartbeat and, at most every half interval,
on any other frame; while the reader waits for its bounded backlog (`MAX_PENDING_FRAMES`/`_BYTES`)
to shrink, the lease is kept too: the agent is alive, we are slow. A socket is idle only when no
frame arrived while listening for the heartbeat timeout, however long processing took.
Closing the socket cuts the lease to a short reconnect grace (`reconnect_grace_s`; only for the agent's
latest session): a reconnect within it keeps the running tasks, else the reaper requeues them. The first
heartbeat of a session reconciles: running attempts it does not list (a restarted process) are requeued.
A submit's inbox entry is acked by the accept's or the outcome's script call (or, batched, once progress
implied the accept), a cancel's at once; entries a dead node read but never delivered are claimed on connect.
Results and failures are acked to the agent only after the database commit (the process' `ResultWriter`
commits them in batches).
The layers: `AgentSender` (what goes out), `AgentFrames` (what each frame does), `AgentFrameChains`
(per-task order and the backlog bound), this class (the socket's loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from api.agents.service import AgentService
from api.errors import UnauthorizedError
from api.ws.agent_chains import AgentFrameChains
from api.ws.agent_lanes import TRANSIENT, FrameLanes
from api.ws.framing import CloseCode, SessionClosed
from api.ws.progress_gate import ProgressGate
from protocol.envelope import AGENT_SENDS, decode_batch
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    FEATURE_BATCH,
    Batch,
    ErrorFrame,
    Heartbeat,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.agents.service import AgentRecord
    from api.settings import WsSettings
    from api.ws.framing import FrameSocket
    from protocol.envelope import Frame, MessageType
    from scheduler.client import SchedulerClient
    from scheduler.types import AgentSpec, InboxEntry

__all__ = ("AgentSession", "FrameLanes")

logger = logging.getLogger(__name__)

WIND_DOWN_S = 5.0
"""How long a closing session lets its in-flight frame handlers finish (commit, ack) before cancelling them."""


class AgentSession(AgentFrameChains):
    """One agent socket; `start()` registers presence, `run()` serves it until it closes."""

    role = "agent"

    def __init__(
        self,
        conn: FrameSocket,
        session_id: str,
        *,
        agent: AgentRecord,
        spec: AgentSpec,
        scheduler: SchedulerClient,
        db: async_sessionmaker[AsyncSession],
        settings: WsSettings,
        consumer: str,
        token: str,
        lanes: FrameLanes,
        submit_payload: Callable[[str, InboxEntry], Awaitable[bytes]] | None = None,
        features: list[str] | None = None,
    ) -> None:
        """`submit_payload(agent id, entry)`: the planner's hook giving the submit payload to send (it adds
        sealed LLM credentials for trusted agents, api/planner/credentials.py); None sends entries as stored."""
        super().__init__(conn, session_id)
        self.features = features
        self._batch = features is not None and FEATURE_BATCH in features
        self._token = token
        self.agent = agent
        self._spec = spec
        self._scheduler = scheduler
        self._db = db
        self._settings = settings
        self._submit_payload = submit_payload
        self._consumer = consumer
        self._unaccepted: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._stale_checked: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._replies: list[tuple[MessageType, bytes]] = []
        """Answers gathered this loop turn for one `batch` frame (batch agents only)."""
        """When each reported attempt was last checked for staleness (loop time; bounded)."""
        self._acks: list[str] = []
        self._ack_flusher: asyncio.Task[None] | None = None
        self._gate = ProgressGate(settings.progress_rate_per_s)
        self._fast = lanes.fast
        self._slow = lanes.slow
        self._commits = lanes.commits
        self._progress_lane = lanes.progress
        self._chains = {}
        """Per task id with a frame in flight: the task's later frames, waiting in arrival order."""
        self._runners = set()
        """Handler tasks running (each drains one task id's chain)."""
        self._pending = 0
        """Task frames routed and not finished yet (the reader's backlog bound), with their size below."""
        self._pending_bytes = 0
        self._wound_down = False
        self._room = asyncio.Event()
        self._handler_failed = asyncio.Event()
        self._refresh = asyncio.Event()
        self._handler_error: BaseException | None = None
        self._frame_at = 0.0
        """Loop time of the last frame received (any frame, well-formed or not)."""
        self._renewed_at = 0.0
        """Loop time of the last presence renewal."""
        self._grouped = None
        self._backlogged = False
        """True while the reader waits for the backlog of this agent's frames to shrink."""
        self._reconciled = False
        """Whether this session's first agent heartbeat (listing what it runs) was reconciled."""
        conn.on_refused = self._on_refused

    def log_context(self) -> dict[str, Any]:
        return {**super().log_context(), "agent_id": self.agent.id}

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        return [
            self._read_loop(),
            self._inbox_loop(),
            self._heartbeat_loop(),
            self._lease_loop(),
            self._revalidate_loop(),
            self._handler_failure(),
        ]

    async def register(self) -> None:
        """Presence on connect (before `auth/ok`, so dispatch may start at once)."""
        await self._renew_lease()

    async def _renew_lease(self) -> None:
        self._renewed_at = asyncio.get_running_loop().time()
        await self._scheduler.agent_online(
            self._spec, lease_s=self._settings.heartbeat_timeout_s, session_id=self.session_id
        )

    async def _lease_loop(self) -> None:
        """Renew presence from frames other than heartbeats, and while the agent's own backlog holds us up.

        Throttled to one renewal per half interval. A renewal needs a frame received since the last one
        (or a backlog), so the lease still lapses one timeout after the agent's last frame.
        """
        every_s = self._settings.heartbeat_interval_s / 2
        while True:
            await asyncio.sleep(every_s)
            if self._frame_at <= self._renewed_at and not self._backlogged:
                continue
            try:
                await self._renew_lease()
            except TRANSIENT:
                logger.warning("presence not renewed (storage error)", extra=self.log_context(), exc_info=True)

    async def wind_down(self) -> None:
        """Let in-flight handlers finish (their commits and acks) for a bounded time, then cancel them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WIND_DOWN_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WIND_DOWN_S):
                while self._pending > 0:
                    self._room.clear()
                    await self._room.wait()
        self._wound_down = True  # a progress answer arriving later starts nothing more
        late = [task for task in self._runners if not task.done()]
        for task in late:
            task.cancel()
        if late:
            logger.warning("cancelled %d frame handler(s) at close", len(late), extra=self.log_context())
            await asyncio.wait(late, timeout=1.0)
        flusher = self._ack_flusher  # started by the last accepts, perhaps just now
        if flusher is not None and not flusher.done():
            await asyncio.wait({flusher}, timeout=max(0.1, deadline - loop.time()))
        try:
            await self._scheduler.agent_closed(self.agent_id, self.session_id, grace_s=self._settings.reconnect_grace_s)
        except TRANSIENT:
            # The lease still runs out at its usual time: the tasks come back then.
            logger.warning("reconnect grace not started (storage error)", extra=self.log_context(), exc_info=True)

    def request_refresh(self) -> None:
        """Reload the agent's settings now (its row changed: capabilities, concurrency, owner)."""
        self._refresh.set()

    async def _revalidate_loop(self) -> None:
        """Re-check the token and reload the agent's settings: on `agent_updated`, and periodically.

        The periodic pass is the backstop for a lost control message (pub/sub is at most once).
        """
        interval_s = self._settings.token_recheck_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s if interval_s > 0 else None):
                    await self._refresh.wait()
            self._refresh.clear()
            try:
                async with self._db() as session:
                    record = await AgentService(session, self._scheduler).authenticate(self.agent_id, self._token)
            except UnauthorizedError:
                raise SessionClosed(CloseCode.POLICY_VIOLATION, "agent token revoked") from None
            except TRANSIENT:
                logger.warning("agent token re-check skipped (storage error)", extra=self.log_context())
                continue
            fresh = AgentService.spec(record)
            fresh = replace(fresh, accepting=self._spec.accepting)
            if fresh != self._spec:
                self._spec = fresh
                logger.info("agent settings reloaded", extra=self.log_context())
                await self._renew_lease()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        timeout_s = self._settings.heartbeat_timeout_s
        # Silence counts only while listening: time spent routing a frame or waiting for the backlog to
        # shrink (our slowness, with the agent's frames queued behind) is not the agent being quiet.
        silent_s = 0.0
        while True:
            if self._gate.holding:
                await self._flush_progress(loop.time())
            wait_s = timeout_s - silent_s
            if self._gate.holding:  # wake up early to apply held-back progress when its window opens
                wait_s = min(wait_s, self._gate.interval_s)
            started = loop.time()
            try:
                frame = await self.conn.receive(max(wait_s, 0.001))
            except TimeoutError:
                silent_s += loop.time() - started
                if silent_s >= timeout_s:
                    raise SessionClosed(CloseCode.IDLE, "no frame within the heartbeat timeout") from None
                continue
            silent_s = 0.0
            self._frame_at = loop.time()
            if frame is not None and isinstance(frame.payload, Batch):
                await self._route_batch(frame)
            elif frame is not None:
                await self._route(frame)

    async def _route_batch(self, frame: Frame) -> None:
        """Each item as if it came alone, in order (its share of the frame's size); a bad item is refused by its id."""
        items = decode_batch(frame, accept=AGENT_SENDS)
        share = self.conn.last_frame_chars // len(items)
        # Progress items whose task is idle gather into one group call (`_start`); sent before any await here.
        self._grouped = []
        try:
            for item in items:
                if isinstance(item, ProtocolError):
                    self._send_group()
                    await self.conn.send(ErrorFrame.from_error(item))
                    self._grouped = []
                elif not self._has_room() or not self._take(item, share):
                    self._send_group()
                    await self._route(item, share)
                    self._grouped = []
        finally:
            self._send_group()

    async def _route(self, frame: Frame, size: int | None = None) -> None:
        if size is None:
            size = self.conn.last_frame_chars
        if isinstance(frame.payload, Heartbeat):
            # Inline and first: liveness must not queue behind results being committed.
            await self._guarded(frame.type, frame.id, self._on_heartbeat(frame.payload))
            return
        if not self._has_room():
            await self._wait_for_room()
        if not self._take(frame, size):  # decode_frame refuses types outside AGENT_SENDS; stay safe anyway
            await self.conn.reject(ErrorCode.VALIDATION_ERROR, "agents may not send this type", ref=frame.id)
