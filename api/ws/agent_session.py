"""An agent's socket (`role=agent`): presence, inbox delivery, and the agent's task frames.

Liveness never waits on the database: the read loop only reads. Heartbeats are handled inline at
once; task frames go to handlers that run side by side (the frames of one task in arrival order), in
two process-wide lanes of `agent_frame_concurrency` each (`FrameLanes`), so an accept never waits
behind commits. The presence lease is renewed on every heartbeat and, at most every half interval,
on any other frame; while the reader waits for its bounded backlog (`MAX_PENDING_FRAMES`/`_BYTES`)
to shrink, the lease is kept too: the agent is alive, we are slow. A socket is idle only when no
frame arrived while listening for the heartbeat timeout, however long processing took.
Closing the socket cuts the lease to a short reconnect grace (`reconnect_grace_s`; only for the agent's
latest session): a reconnect within it keeps the running tasks, else the reaper requeues them. The first
heartbeat of a session reconciles: running attempts it does not list (a restarted process) are requeued.
Inbox entries are acked (batched) when the agent accepts the submit, or at once for a cancel;
entries a dead node read but never delivered are claimed on connect. Results and failures are acked
to the agent only after the database commit (the process' `ResultWriter` commits them in batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import msgspec
import redis.exceptions
from sqlalchemy.exc import SQLAlchemyError

from api.agents.service import AgentService
from api.errors import PayloadTooLargeError, UnauthorizedError
from api.tasks.result_writer import writer_for
from api.tasks.service import Recorded, TaskService
from api.ws.framing import CloseCode, SessionClosed
from api.ws.progress_gate import ProgressGate
from api.ws.session import Session
from protocol.envelope import encode_payload, encode_raw_frame
from protocol.errors import ErrorCode
from protocol.limits import MAX_HEARTBEAT_TASKS
from protocol.messages import (
    Ack,
    ErrorFrame,
    Heartbeat,
    TaskAccept,
    TaskCancel,
    TaskError,
    TaskProgress,
    TaskResult,
    TaskStream,
)
from scheduler.types import AgentSpec, Outcome

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.agents.service import AgentRecord
    from api.settings import WsSettings
    from api.ws.framing import FrameSocket
    from protocol.envelope import Frame
    from protocol.errors import ProtocolError
    from scheduler.client import SchedulerClient
    from scheduler.types import Applied, InboxEntry

__all__ = ("AgentSession", "FrameLanes")

logger = logging.getLogger(__name__)

INBOX_BLOCK_MS = 2000
"""Longest blocking inbox read; short so a closing session stops promptly."""
INBOX_BATCH = 64
MAX_UNACCEPTED = 10_000
"""Delivered-but-not-accepted submits remembered for acking; older ones are redelivered on reconnect."""
MAX_PENDING_FRAMES = 1000
"""Task frames of one socket read but not yet handled; past it (or the byte cap) the reader waits."""
MAX_PENDING_BYTES = 16 * 1024 * 1024
"""Bytes of those frames; with the count it bounds what one agent can make the server hold."""
WIND_DOWN_S = 5.0
"""How long a closing session lets its in-flight frame handlers finish (commit, ack) before cancelling them."""
MAX_AWAITING_COMMIT = 4096
"""Result/error frames of this process in flight at once; the writer commits what gathers in one batch."""
_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class FrameLanes:
    """How many agent frames this process handles at once, shared by all its agent sockets.

    Process-wide on purpose: the Redis and database pools are per process, and a per-socket bound
    times many busy agents exhausts them (the Redis pool then refuses heartbeats and accepts too).
    Two lanes, so an accept (Redis only, with a deadline) never waits behind commits. Result and error
    frames take the slow lane only for their Redis step; their commit wait counts against `commits`,
    so every outcome waiting at once can share one batched transaction (`api.tasks.result_writer`).
    """

    fast: asyncio.Semaphore
    """Accept and progress frames (a Redis script each)."""
    slow: asyncio.Semaphore
    """The Redis step of result and error frames (their commit wait is outside it)."""
    commits: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_AWAITING_COMMIT))
    """Result and error frames in progress, most of them waiting for the process' batched commit."""

    @classmethod
    def of(cls, limit: int) -> FrameLanes:
        return cls(fast=asyncio.Semaphore(max(1, limit)), slow=asyncio.Semaphore(max(1, limit)))


_REFUSALS: dict[Outcome, ErrorCode] = {
    Outcome.STALE_ATTEMPT: ErrorCode.STALE_ATTEMPT,
    Outcome.NOT_ASSIGNED: ErrorCode.NOT_ASSIGNED,
    Outcome.NOT_FOUND: ErrorCode.NOT_FOUND,
    Outcome.TERMINAL: ErrorCode.TASK_NOT_RUNNABLE,
}
_REFUSAL_TEXT: dict[ErrorCode, str] = {
    ErrorCode.STALE_ATTEMPT: "this attempt is no longer current",
    ErrorCode.NOT_ASSIGNED: "the task is not assigned to this agent",
    ErrorCode.NOT_FOUND: "task not found",
    ErrorCode.TASK_NOT_RUNNABLE: "the task is already finished",
}
_TRANSIENT = (redis.exceptions.RedisError, OSError, SQLAlchemyError)


def _refusal(code: ErrorCode, ref: str | None, task_id: str, attempt: int) -> ErrorFrame:
    return ErrorFrame.of(
        code, _REFUSAL_TEXT.get(code, "refused"), details={"taskId": task_id, "attempt": attempt}, ref=ref
    )


class AgentSession(Session):
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
    ) -> None:
        """`submit_payload(agent id, entry)`: the planner's hook giving the submit payload to send (it adds
        sealed LLM credentials for trusted agents, api/planner/credentials.py); None sends entries as stored."""
        super().__init__(conn, session_id)
        self._token = token
        self.agent = agent
        self._spec = spec
        self._scheduler = scheduler
        self._db = db
        self._settings = settings
        self._submit_payload = submit_payload
        self._consumer = consumer
        self._unaccepted: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._acks: list[str] = []
        self._ack_flusher: asyncio.Task[None] | None = None
        self._gate = ProgressGate(settings.progress_rate_per_s)
        self._fast = lanes.fast
        self._slow = lanes.slow
        self._commits = lanes.commits
        self._chains: dict[str, asyncio.Task[None]] = {}
        """Per task id, the handler of its latest frame: the next frame of that task waits for it."""
        self._handlers: dict[asyncio.Task[None], int] = {}
        """Handlers not finished yet, with their frame's size (the reader's backlog bound)."""
        self._pending_bytes = 0
        self._room = asyncio.Event()
        self._handler_failed = asyncio.Event()
        self._refresh = asyncio.Event()
        self._handler_error: BaseException | None = None
        self._frame_at = 0.0
        """Loop time of the last frame received (any frame, well-formed or not)."""
        self._renewed_at = 0.0
        """Loop time of the last presence renewal."""
        self._backlogged = False
        """True while the reader waits for the backlog of this agent's frames to shrink."""
        self._reconciled = False
        """Whether this session's first agent heartbeat (listing what it runs) was reconciled."""
        conn.on_refused = self._on_refused

    @property
    def agent_id(self) -> str:
        return self.agent.id

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
            except _TRANSIENT:
                logger.warning("presence not renewed (storage error)", extra=self.log_context(), exc_info=True)

    async def wind_down(self) -> None:
        """Let in-flight handlers finish (their commits and acks) for a bounded time, then cancel them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WIND_DOWN_S
        if self._handlers:
            _, late = await asyncio.wait(set(self._handlers), timeout=WIND_DOWN_S)
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
        except _TRANSIENT:
            # The lease still runs out at its usual time: the tasks come back then.
            logger.warning("reconnect grace not started (storage error)", extra=self.log_context(), exc_info=True)

    # --- server -> agent ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval_s = self._settings.heartbeat_interval_s
        while True:
            await self.conn.send(Heartbeat(interval=interval_s))
            await asyncio.sleep(interval_s)

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
            except _TRANSIENT:
                logger.warning("agent token re-check skipped (storage error)", extra=self.log_context())
                continue
            fresh = AgentService.spec(record)
            fresh = replace(fresh, accepting=self._spec.accepting)
            if fresh != self._spec:
                self._spec = fresh
                logger.info("agent settings reloaded", extra=self.log_context())
                await self._renew_lease()

    async def _inbox_loop(self) -> None:
        failures = 0
        claimed = False
        while True:
            try:
                if not claimed:
                    # Entries read by a node (or an earlier session) that died before the agent accepted.
                    await self._deliver(await self._scheduler.claim_inbox_pending(self.agent_id, self._consumer))
                    claimed = True
                entries = await self._scheduler.read_inbox(
                    self.agent_id, self._consumer, block_ms=INBOX_BLOCK_MS, count=INBOX_BATCH
                )
                await self._deliver(entries)
                failures = 0
            except (redis.exceptions.RedisError, OSError):
                delay = _RETRY_DELAYS_S[min(failures, len(_RETRY_DELAYS_S) - 1)]
                failures += 1
                logger.warning("inbox read failed; retrying in %.1f s", delay, extra=self.log_context(), exc_info=True)
                await asyncio.sleep(delay)

    async def _deliver(self, entries: list[InboxEntry]) -> None:
        cancels: list[str] = []
        for entry in entries:
            if entry.kind == "submit":
                payload = entry.payload_json
                if self._submit_payload is not None:
                    payload = await self._submit_payload(self.agent.id, entry)
                await self.conn.send_text(encode_raw_frame("task/submit", payload).decode())
                self._remember(entry.task_id, entry.attempt, entry.entry_id)
            else:
                await self.conn.send_text(encode_raw_frame("task/cancel", entry.payload_json).decode())
                cancels.append(entry.entry_id)
            logger.debug(
                "delivered %s task_id=%s attempt=%d", entry.kind, entry.task_id, entry.attempt, extra=self.log_context()
            )
        if cancels:
            await self._scheduler.ack_inbox(self.agent_id, cancels)

    def _remember(self, task_id: str, attempt: int, entry_id: str) -> None:
        self._unaccepted[(task_id, attempt)] = entry_id
        if len(self._unaccepted) > MAX_UNACCEPTED:
            self._unaccepted.popitem(last=False)

    def _ack_entry(self, task_id: str, attempt: int) -> None:
        """Queue the submit's inbox entry for acking; one flusher acks whatever gathered, in one call.

        Off the accept's path (an accept has a deadline; the ack has none): an entry left unacked by a
        dying session is redelivered on reconnect, and the agent deduplicates by (taskId, attempt).
        """
        entry_id = self._unaccepted.pop((task_id, attempt), None)
        if entry_id is None:
            return
        self._acks.append(entry_id)
        if self._ack_flusher is None or self._ack_flusher.done():
            self._ack_flusher = asyncio.create_task(self._flush_acks())
            self._ack_flusher.add_done_callback(self._note_failure)

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                await self._scheduler.ack_inbox(self.agent_id, batch)
            except _TRANSIENT:
                logger.warning(
                    "%d inbox entries left unacked (storage error)", len(batch), extra=self.log_context(), exc_info=True
                )

    # --- agent -> server ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        timeout_s = self._settings.heartbeat_timeout_s
        # Silence counts only while listening: time spent routing a frame or waiting for the backlog to
        # shrink (our slowness, with the agent's frames queued behind) is not the agent being quiet.
        silent_s = 0.0
        while True:
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
            if frame is not None:
                await self._route(frame)

    async def _route(self, frame: Frame) -> None:
        payload = frame.payload
        size = self.conn.last_frame_chars
        if isinstance(payload, Heartbeat):
            # Inline and first: liveness must not queue behind results being committed.
            await self._guarded(frame.type, frame.id, self._on_heartbeat(payload))
        elif isinstance(payload, TaskProgress):
            # Coalesced at arrival, so a progress flood makes no backlog.
            if self._gate.admit(payload, asyncio.get_running_loop().time()):
                work = self._apply_progress(frame.id, payload)
                await self._dispatch(
                    payload.task_id, work, lane=self._fast, frame_type=frame.type, ref=frame.id, size=size
                )
        elif isinstance(payload, TaskStream):
            # Fenced like progress but never through the gate: every piece counts.
            work = self._apply_stream(frame.id, payload)
            await self._dispatch(payload.task_id, work, lane=self._fast, frame_type=frame.type, ref=frame.id, size=size)
        elif isinstance(payload, TaskAccept):
            work = self._on_accept(frame.id, payload)
            await self._dispatch(payload.task_id, work, lane=self._fast, frame_type=frame.type, ref=frame.id, size=size)
        elif isinstance(payload, TaskResult):
            work = self._on_result(frame.id, payload)
            await self._dispatch(
                payload.task_id, work, lane=self._commits, frame_type=frame.type, ref=frame.id, size=size
            )
        elif isinstance(payload, TaskError):
            work = self._on_error(frame.id, payload)
            await self._dispatch(
                payload.task_id, work, lane=self._commits, frame_type=frame.type, ref=frame.id, size=size
            )
        else:  # decode_frame refuses types outside AGENT_SENDS; stay safe anyway
            await self.conn.reject(ErrorCode.VALIDATION_ERROR, "agents may not send this type", ref=frame.id)

    async def _dispatch(
        self,
        task_id: str,
        work: Coroutine[Any, Any, None],
        *,
        lane: asyncio.Semaphore,
        frame_type: str,
        ref: str | None,
        size: int,
    ) -> None:
        """Start a handler for `work`: after the previous frame of the same task, in `lane`.

        The reader reads on while handlers wait (so an accept is not stuck behind commits); it only
        waits itself when the backlog is at its cap.
        """
        try:
            while len(self._handlers) >= MAX_PENDING_FRAMES or self._pending_bytes >= MAX_PENDING_BYTES:
                self._backlogged = True
                self._room.clear()
                await self._room.wait()
        except BaseException:
            work.close()
            raise
        finally:
            self._backlogged = False
        previous = self._chains.get(task_id)
        handler = asyncio.create_task(self._run_handler(previous, lane, frame_type, ref, work))
        self._chains[task_id] = handler
        self._handlers[handler] = size
        self._pending_bytes += size
        handler.add_done_callback(lambda done: self._handler_done(task_id, done))

    async def _run_handler(
        self,
        previous: asyncio.Task[None] | None,
        lane: asyncio.Semaphore,
        frame_type: str,
        ref: str | None,
        work: Coroutine[Any, Any, None],
    ) -> None:
        try:
            if previous is not None and not previous.done():
                # Wait for the task's earlier frame whatever its outcome (asyncio.wait never raises it).
                await asyncio.wait({previous})
            async with lane:
                await self._guarded(frame_type, ref, work)
        finally:
            work.close()  # a no-op once awaited; releases a coroutine that never started (cancelled early)

    def _handler_done(self, task_id: str, handler: asyncio.Task[None]) -> None:
        self._pending_bytes -= self._handlers.pop(handler, 0)
        self._room.set()
        if self._chains.get(task_id) is handler:
            del self._chains[task_id]
        self._note_failure(handler)

    def _note_failure(self, task: asyncio.Task[None]) -> None:
        """A helper task's exception ends the session as the reader's would (SessionClosed, PeerGoneError, a bug)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._handler_error is None:
            self._handler_error = exc
            self._handler_failed.set()

    async def _handler_failure(self) -> None:
        await self._handler_failed.wait()
        if self._handler_error is not None:
            raise self._handler_error

    async def _guarded(self, frame_type: str, ref: str | None, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except _TRANSIENT:
            # Nothing was acked: the agent resends results and errors; progress is best effort.
            logger.warning("frame %s not applied (storage error)", frame_type, extra=self.log_context(), exc_info=True)
            await self.conn.send(
                ErrorFrame.of(ErrorCode.SERVICE_UNAVAILABLE, "temporarily unavailable, resend later", ref=ref)
            )

    async def _on_heartbeat(self, beat: Heartbeat) -> None:
        accepting = not beat.draining
        if accepting != self._spec.accepting:
            self._spec = AgentSpec(
                agent_id=self._spec.agent_id,
                owner_id=self._spec.owner_id,
                capabilities=self._spec.capabilities,
                concurrency=self._spec.concurrency,
                accepting=accepting,
            )
            logger.info("agent %s", "accepting" if accepting else "draining", extra=self.log_context())
        await self._renew_lease()
        if not self._reconciled and beat.running_tasks is not None:
            # Agents that leave `runningTasks` out are never reconciled: their silence proves nothing; nor is a
            # list at its length cap (it may be cut short).
            if len(beat.running_tasks) < MAX_HEARTBEAT_TASKS:
                await self._reconcile([(ref.task_id, ref.attempt) for ref in beat.running_tasks])
            self._reconciled = True
        if beat.running_tasks:
            await self._cancel_stale([(ref.task_id, ref.attempt) for ref in beat.running_tasks])

    async def _reconcile(self, running: list[tuple[str, int]]) -> None:
        """Requeue the running attempts a (re)connected agent does not list: an earlier process of it died."""
        result = await self._scheduler.reconcile_agent(self.agent_id, running)
        if result.requeued or result.failed or result.freed:
            logger.warning(
                "reconciled on connect: %d lost attempt(s) requeued, %d failed (loss bound), %d stale slot(s) freed",
                result.requeued,
                result.failed,
                result.freed,
                extra=self.log_context(),
            )

    async def _cancel_stale(self, reported: list[tuple[str, int]]) -> None:
        """Tell the agent to drop attempts it runs that the scheduler no longer gives it."""
        for task_id, attempt in await self._scheduler.stale_attempts(self.agent_id, reported):
            logger.warning(
                "cancelling a stale attempt task_id=%s attempt=%d", task_id, attempt, extra=self.log_context()
            )
            await self.conn.send(TaskCancel(task_id=task_id, attempt=attempt, reason="stale attempt"))

    async def _on_accept(self, ref: str, accept: TaskAccept) -> None:
        applied = await self._scheduler.accept(accept.task_id, accept.attempt, self.agent_id)
        # Whatever the outcome, the submit entry has served its purpose.
        self._ack_entry(accept.task_id, accept.attempt)
        await self._answer(ref, applied, accept.task_id, accept.attempt)

    async def _flush_progress(self, now: float) -> None:
        """Hand held-back progress whose window opened to its task's handler chain."""
        for held in self._gate.due(now):
            work = self._apply_progress(None, held)
            await self._dispatch(held.task_id, work, lane=self._fast, frame_type="task/progress", ref=None, size=0)

    async def _flush_attempt(self, task_id: str, attempt: int) -> None:
        """Apply the attempt's held-back progress before its outcome, so its last state is kept."""
        held = self._gate.take(task_id, attempt)
        if held is not None:
            await self._apply_progress(None, held)

    async def _apply_progress(self, ref: str | None, progress: TaskProgress) -> None:
        # Agents leave `seq` out; the scheduler's script numbers the event.
        payload = msgspec.structs.replace(progress, seq=None) if progress.seq is not None else progress
        applied = await self._scheduler.progress(
            progress.task_id, progress.attempt, self.agent_id, encode_payload(payload)
        )
        if applied.outcome not in (Outcome.OK, Outcome.DUPLICATE):
            code = _REFUSALS.get(applied.outcome, ErrorCode.CONFLICT)
            await self.conn.send(_refusal(code, ref, progress.task_id, progress.attempt))

    async def _apply_stream(self, ref: str, piece: TaskStream) -> None:
        """Append a stream piece; answered only when refused (a gap says where to resume)."""
        applied = await self._scheduler.stream(piece.task_id, piece.attempt, self.agent_id, piece.offset, piece.delta)
        if applied.outcome in (Outcome.OK, Outcome.DUPLICATE):
            return
        details: dict[str, Any] = {"taskId": piece.task_id, "attempt": piece.attempt}
        if applied.outcome is Outcome.STREAM_GAP:
            message = "the piece starts beyond the stream's end; resend from expectedOffset"
            error = ErrorFrame.of(
                ErrorCode.STREAM_GAP, message, details={**details, "expectedOffset": applied.expected_offset}, ref=ref
            )
        elif applied.outcome is Outcome.BAD_OFFSET:
            message = "the offset cuts a UTF-8 character; resend from expectedOffset"
            error = ErrorFrame.of(
                ErrorCode.VALIDATION_ERROR,
                message,
                details={**details, "field": "$.payload.offset", "expectedOffset": applied.expected_offset},
                ref=ref,
            )
        else:
            error = _refusal(_REFUSALS.get(applied.outcome, ErrorCode.CONFLICT), ref, piece.task_id, piece.attempt)
        await self.conn.send(error)

    def _outcome_service(self, session: AsyncSession) -> TaskService:
        """Outcomes commit in the process' batches; only their Redis step takes the slow lane."""
        return TaskService(session, self._scheduler, writer=writer_for(self._db), redis_lane=self._slow)

    async def _on_result(self, ref: str, result: TaskResult) -> None:
        async with self._slow:
            await self._flush_attempt(result.task_id, result.attempt)
        async with self._db() as session:
            service = self._outcome_service(session)
            try:
                recorded = await service.record_result(result.task_id, result.attempt, self.agent_id, result.output)
            except PayloadTooLargeError as exc:
                await session.rollback()
                await self._fail_oversized(result.task_id, result.attempt)
                await self.conn.send(ErrorFrame.of(ErrorCode.PAYLOAD_TOO_LARGE, exc.message, ref=ref))
                return
        await self._send_recorded(ref, recorded, result.task_id, result.attempt)

    async def _on_error(self, ref: str, error: TaskError) -> None:
        async with self._slow:
            await self._flush_attempt(error.task_id, error.attempt)
        async with self._db() as session:
            recorded = await self._outcome_service(session).record_failure(
                error.task_id,
                error.attempt,
                self.agent_id,
                error=error.error,
                message=error.message,
                retryable=error.retryable,
                retry_delay_s=error.retry_delay_s,
            )
        await self._send_recorded(ref, recorded, error.task_id, error.attempt)

    async def _send_recorded(self, ref: str, recorded: Recorded, task_id: str, attempt: int) -> None:
        if recorded.ack:
            await self.conn.send(Ack(ref=ref, duplicate=True if recorded.duplicate else None))
        else:
            await self.conn.send(_refusal(recorded.error or ErrorCode.CONFLICT, ref, task_id, attempt))

    async def _answer(self, ref: str, applied: Applied, task_id: str, attempt: int) -> None:
        if applied.outcome in (Outcome.OK, Outcome.DUPLICATE):
            await self.conn.send(Ack(ref=ref, duplicate=True if applied.outcome == Outcome.DUPLICATE else None))
        else:
            await self.conn.send(_refusal(_REFUSALS.get(applied.outcome, ErrorCode.CONFLICT), ref, task_id, attempt))

    async def _on_refused(self, exc: ProtocolError) -> None:
        """An oversized `task/result` fails its attempt (not retryable) instead of being resent forever."""
        details = exc.details or {}
        if exc.code is not ErrorCode.PAYLOAD_TOO_LARGE or details.get("type") != "task/result":
            return
        task_id, attempt = details.get("taskId"), details.get("attempt")
        if isinstance(task_id, str) and isinstance(attempt, int):
            try:
                await self._fail_oversized(task_id, attempt)
            except _TRANSIENT:
                logger.warning("could not record an oversized result", extra=self.log_context(), exc_info=True)

    async def _fail_oversized(self, task_id: str, attempt: int) -> None:
        async with self._db() as session:
            await TaskService(session, self._scheduler).record_failure(
                task_id,
                attempt,
                self.agent_id,
                error=ErrorCode.PAYLOAD_TOO_LARGE.error,
                message="the result is over the size limit",
                retryable=False,
                retry_delay_s=None,
            )
