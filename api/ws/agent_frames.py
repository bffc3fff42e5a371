"""Agent -> server: what each task frame does (heartbeat, accept, progress, stream, result, error).

The base of `AgentSession` (api/ws/agent_session.py), which routes frames here and sets the state
declared below. The first heartbeat of a session reconciles: running attempts it does not list (a
restarted process) are requeued. Results and failures are acked to the agent only after the database
commit (the process' `ResultWriter` commits them in batches).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from api.errors import PayloadTooLargeError
from api.tasks.outcomes import Outcomes
from api.tasks.result_writer import writer_for
from api.tasks.service import TaskService
from api.ws.agent_lanes import REFUSALS, TRANSIENT, refusal
from api.ws.agent_sender import MAX_UNACCEPTED, AgentSender
from protocol.envelope import encode_payload
from protocol.errors import ErrorCode, ProtocolError
from protocol.limits import MAX_HEARTBEAT_TASKS
from protocol.messages import (
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
    from collections import OrderedDict

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.ws.progress_gate import ProgressGate
    from scheduler.types import Applied

__all__ = ("AgentFrames", "progress_json")

logger = logging.getLogger("api.ws.agent_session")  # the session's own logger name, as before the split

STALE_RECHECK_S = 30.0
"""How often one running attempt an agent reports is checked against the scheduler again."""


def progress_json(progress: TaskProgress) -> bytes:
    """The frame as the scheduler's script takes it: agents leave `seq` out; the script numbers the event."""
    payload = msgspec.structs.replace(progress, seq=None) if progress.seq is not None else progress
    return encode_payload(payload)


class AgentFrames(AgentSender):
    """The handlers of an agent's frames; `AgentSession.__init__` sets every attribute below."""

    _spec: AgentSpec
    _db: async_sessionmaker[AsyncSession]
    _gate: ProgressGate
    _slow: asyncio.Semaphore
    _stale_checked: OrderedDict[tuple[str, int], float]
    _reconciled: bool

    async def _renew_lease(self) -> None:
        raise NotImplementedError

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
        """Tell the agent to drop attempts it runs that the scheduler no longer gives it.

        Throttled: an attempt is looked up when first reported, then at most every `STALE_RECHECK_S` (an agent
        heartbeating often, or running many tasks, would otherwise cost a Redis read per task per heartbeat).
        """
        now = asyncio.get_running_loop().time()
        due = [key for key in reported if now - self._stale_checked.get(key, -STALE_RECHECK_S) >= STALE_RECHECK_S]
        if not due:
            return
        for key in due:
            self._stale_checked[key] = now
            self._stale_checked.move_to_end(key)
        while len(self._stale_checked) > MAX_UNACCEPTED:
            self._stale_checked.popitem(last=False)
        for task_id, attempt in await self._scheduler.stale_attempts(self.agent_id, due):
            logger.warning(
                "cancelling a stale attempt task_id=%s attempt=%d", task_id, attempt, extra=self.log_context()
            )
            await self.conn.send(TaskCancel(task_id=task_id, attempt=attempt, reason="stale attempt"))

    async def _on_accept(self, ref: str, accept: TaskAccept) -> None:
        key = (accept.task_id, accept.attempt)
        # Whatever the outcome, the submit entry has served its purpose: the script acks it.
        entry = self._unaccepted.get(key, "")
        applied = await self._scheduler.accept(accept.task_id, accept.attempt, self.agent_id, inbox_entry=entry)
        self._unaccepted.pop(key, None)
        await self._answer(ref, applied, accept.task_id, accept.attempt)

    async def _flush_attempt(self, task_id: str, attempt: int) -> None:
        """Apply the attempt's held-back progress before its outcome, so its last state is kept (in the slow
        lane, taken only when there is such progress: most outcomes have none)."""
        held = self._gate.take(task_id, attempt)
        if held is not None:
            async with self._slow:
                await self._apply_progress(None, held)

    async def _apply_progress(self, ref: str | None, progress: TaskProgress) -> None:
        applied = await self._scheduler.progress(
            progress.task_id, progress.attempt, self.agent_id, progress_json(progress)
        )
        error = self._progress_applied(ref, progress, applied)
        if error is not None:
            await self.conn.send(error)

    def _progress_applied(self, ref: str | None, progress: TaskProgress, applied: Applied) -> ErrorFrame | None:
        """After the scheduler's answer: ack the submit's entry; the refusal to send, if refused."""
        self._ack_entry(progress.task_id, progress.attempt)  # it implies the accept
        if applied.outcome in (Outcome.OK, Outcome.DUPLICATE):
            return None
        return refusal(REFUSALS.get(applied.outcome, ErrorCode.CONFLICT), ref, progress.task_id, progress.attempt)

    async def _apply_stream(self, ref: str, piece: TaskStream) -> None:
        """Append a stream piece; answered only when refused (a gap says where to resume)."""
        applied = await self._scheduler.stream(piece.task_id, piece.attempt, self.agent_id, piece.offset, piece.delta)
        self._ack_entry(piece.task_id, piece.attempt)  # it implies the accept
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
            error = refusal(REFUSALS.get(applied.outcome, ErrorCode.CONFLICT), ref, piece.task_id, piece.attempt)
        await self.conn.send(error)

    def _outcomes(self) -> Outcomes:
        """Outcomes commit in the process' batches (no session of their own); only their Redis step takes the
        slow lane."""
        return Outcomes(None, self._scheduler, writer=writer_for(self._db), redis_lane=self._slow)

    async def _on_result(self, ref: str, result: TaskResult) -> None:
        await self._flush_attempt(result.task_id, result.attempt)
        entry = self._unaccepted.get((result.task_id, result.attempt), "")
        try:
            recorded = await self._outcomes().record_result(
                result.task_id, result.attempt, self.agent_id, result.output, inbox_entry=entry
            )
        except PayloadTooLargeError as exc:
            await self._fail_oversized(result.task_id, result.attempt)
            await self.conn.send(ErrorFrame.of(ErrorCode.PAYLOAD_TOO_LARGE, exc.message, ref=ref))
            return
        self._entry_done(result.task_id, result.attempt, acked=recorded.entry_acked)
        await self._send_recorded(ref, recorded, result.task_id, result.attempt)

    async def _on_error(self, ref: str, error: TaskError) -> None:
        await self._flush_attempt(error.task_id, error.attempt)
        entry = self._unaccepted.get((error.task_id, error.attempt), "")
        recorded = await self._outcomes().record_failure(
            error.task_id,
            error.attempt,
            self.agent_id,
            error=error.error,
            message=error.message,
            retryable=error.retryable,
            retry_delay_s=error.retry_delay_s,
            inbox_entry=entry,
        )
        self._entry_done(error.task_id, error.attempt, acked=recorded.entry_acked)
        await self._send_recorded(ref, recorded, error.task_id, error.attempt)

    async def _on_refused(self, exc: ProtocolError) -> None:
        """An oversized `task/result` fails its attempt (not retryable) instead of being resent forever."""
        details = exc.details or {}
        if exc.code is not ErrorCode.PAYLOAD_TOO_LARGE or details.get("type") != "task/result":
            return
        task_id, attempt = details.get("taskId"), details.get("attempt")
        if isinstance(task_id, str) and isinstance(attempt, int):
            try:
                await self._fail_oversized(task_id, attempt)
            except TRANSIENT:
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
