"""Server -> agent: submits and cancels from the agent's inbox, acks of inbox entries, answers to frames.

The base of `AgentSession` (api/ws/agent_session.py), which sets the state declared here. A submit's inbox
entry is acked by the script call of the attempt's accept or outcome (its id rides that call), by a call of
its own (batched) when progress or a stream piece implied the accept, and a cancel's at once; entries a dead
node read but never delivered are claimed on connect. A batch agent gets its answers of one loop turn in one frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import redis.exceptions

from api.ws.agent_lanes import REFUSALS, TRANSIENT, refusal
from api.ws.session import Session
from protocol.envelope import encode_batch, encode_payload, encode_raw_frame
from protocol.errors import ErrorCode
from protocol.messages import Ack, ErrorFrame, Heartbeat
from scheduler.types import Outcome

if TYPE_CHECKING:
    from collections import OrderedDict
    from collections.abc import Awaitable, Callable

    from api.agents.service import AgentRecord
    from api.settings import WsSettings
    from api.tasks.service import Recorded
    from protocol.envelope import MessageType
    from scheduler.client import SchedulerClient
    from scheduler.types import Applied, InboxEntry

__all__ = ("AgentSender",)

logger = logging.getLogger("api.ws.agent_session")  # the session's own logger name, as before the split

INBOX_BLOCK_MS = 2000
"""Longest blocking inbox read; short so a closing session stops promptly."""
INBOX_BATCH = 64
MAX_UNACCEPTED = 10_000
"""Delivered-but-not-accepted submits remembered for acking; older ones are redelivered on reconnect."""
_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
MAX_BATCH_OUT_BYTES = 256 * 1024
"""Payload bytes per `batch` frame sent to an agent (INBOX_BATCH bounds the item count)."""


class AgentSender(Session):
    """What an agent session sends; `AgentSession.__init__` sets every attribute below."""

    agent: AgentRecord
    _batch: bool
    _scheduler: SchedulerClient
    _settings: WsSettings
    _consumer: str
    _submit_payload: Callable[[str, InboxEntry], Awaitable[bytes]] | None
    _unaccepted: OrderedDict[tuple[str, int], str]
    _replies: list[tuple[MessageType, bytes]]
    _acks: list[str]
    _ack_flusher: asyncio.Task[None] | None
    _handler_failed: asyncio.Event
    _handler_error: BaseException | None

    @property
    def agent_id(self) -> str:
        return self.agent.id

    async def _heartbeat_loop(self) -> None:
        interval_s = self._settings.heartbeat_interval_s
        while True:
            await self.conn.send(Heartbeat(interval=interval_s))
            await asyncio.sleep(interval_s)

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
        outgoing: list[tuple[MessageType, bytes]] = []
        for entry in entries:
            if entry.kind == "submit":
                payload = entry.payload_json
                if self._submit_payload is not None:
                    payload = await self._submit_payload(self.agent.id, entry)
                outgoing.append(("task/submit", payload))
                self._remember(entry.task_id, entry.attempt, entry.entry_id)
            else:
                outgoing.append(("task/cancel", entry.payload_json))
                cancels.append(entry.entry_id)
            logger.debug(
                "delivered %s task_id=%s attempt=%d", entry.kind, entry.task_id, entry.attempt, extra=self.log_context()
            )
        await self._send_all(outgoing)
        if cancels:
            await self._scheduler.ack_inbox(self.agent_id, cancels)

    async def _send_all(self, outgoing: list[tuple[MessageType, bytes]]) -> None:
        """Frames in order: one `batch` frame per `MAX_BATCH_OUT_BYTES` when the agent negotiated batches."""
        if not self._batch:
            for message_type, payload in outgoing:
                await self.conn.send_encoded(encode_raw_frame(message_type, payload))
            return
        chunk: list[tuple[MessageType, bytes, str | None]] = []
        size = 0
        for message_type, payload in outgoing:
            if chunk and size + len(payload) > MAX_BATCH_OUT_BYTES:
                await self._send_chunk(chunk)
                chunk, size = [], 0
            chunk.append((message_type, payload, None))
            size += len(payload)
        if chunk:
            await self._send_chunk(chunk)

    async def _send_chunk(self, chunk: list[tuple[MessageType, bytes, str | None]]) -> None:
        if len(chunk) == 1:
            await self.conn.send_encoded(encode_raw_frame(chunk[0][0], chunk[0][1]))
        else:
            await self.conn.send_encoded(encode_batch(chunk))

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

    def _entry_done(self, task_id: str, attempt: int, *, acked: bool) -> None:
        """After an outcome: forget the submit's entry when the scheduler's call acked it (the entry id rode
        the script call: no round trip of its own), else queue it for acking (the accept was implied)."""
        if acked:
            self._unaccepted.pop((task_id, attempt), None)
        else:
            self._ack_entry(task_id, attempt)

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                await self._scheduler.ack_inbox(self.agent_id, batch)
            except TRANSIENT:
                logger.warning(
                    "%d inbox entries left unacked (storage error)", len(batch), extra=self.log_context(), exc_info=True
                )

    def _note_failure(self, task: asyncio.Task[None]) -> None:
        """A helper task's exception ends the session as the reader's would (SessionClosed, PeerGoneError, a bug)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """End the session with `exc` (the first failure wins)."""
        if self._handler_error is None:
            self._handler_error = exc
            self._handler_failed.set()

    async def _handler_failure(self) -> None:
        await self._handler_failed.wait()
        if self._handler_error is not None:
            raise self._handler_error

    async def _send_recorded(self, ref: str, recorded: Recorded, task_id: str, attempt: int) -> None:
        if recorded.ack:
            await self._reply(Ack(ref=ref, duplicate=True if recorded.duplicate else None))
        else:
            await self._reply(refusal(recorded.error or ErrorCode.CONFLICT, ref, task_id, attempt))

    async def _answer(self, ref: str, applied: Applied, task_id: str, attempt: int) -> None:
        if applied.outcome in (Outcome.OK, Outcome.DUPLICATE):
            await self._reply(Ack(ref=ref, duplicate=True if applied.outcome == Outcome.DUPLICATE else None))
        else:
            await self._reply(refusal(REFUSALS.get(applied.outcome, ErrorCode.CONFLICT), ref, task_id, attempt))

    async def _reply(self, message: Ack | ErrorFrame) -> None:
        """Answer a frame. To a batch agent, the answers of one loop turn (a committed batch of results, say)
        leave together in one `batch` frame, sent by the first of them once the others had their turn."""
        if not self._batch:
            await self.conn.send(message)
            return
        kind: MessageType = "ack" if isinstance(message, Ack) else "error"
        self._replies.append((kind, encode_payload(message)))
        if len(self._replies) > 1:
            return  # the first one's sender takes it along
        await asyncio.sleep(0)
        replies, self._replies = self._replies, []
        await self._send_all(replies)
