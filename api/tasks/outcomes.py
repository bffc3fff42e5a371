"""Agent outcomes (`task/result`, `task/error`): fenced in Redis, then committed, then acked."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from api.db.base import utcnow
from api.tasks.outcome_rows import apply_writes
from protocol.errors import ErrorCode
from protocol.limits import MAX_TASK_OUTPUT_BYTES
from protocol.status import TaskStatus
from scheduler.types import Outcome

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession

    from api.tasks.outcome_rows import Kind
    from api.tasks.result_writer import ResultWriter
    from scheduler.client import SchedulerClient

__all__ = ("Outcomes", "Recorded")

# What the agent is told when the scheduler refuses its frame.
_REFUSALS: dict[Outcome, ErrorCode] = {
    Outcome.STALE_ATTEMPT: ErrorCode.STALE_ATTEMPT,
    Outcome.NOT_ASSIGNED: ErrorCode.NOT_ASSIGNED,
    Outcome.NOT_FOUND: ErrorCode.NOT_FOUND,
    Outcome.TERMINAL: ErrorCode.TASK_NOT_RUNNABLE,
}


@dataclass(frozen=True, slots=True)
class Recorded:
    """What to tell the agent about a `task/result` or `task/error` frame.

    `ack` is True only once the outcome is committed to the database: send `ack` (with
    `duplicate`). Otherwise send an error frame with `error`.
    """

    ack: bool
    duplicate: bool
    status: str | None
    error: ErrorCode | None = None
    entry_acked: bool = False
    """The scheduler's call ran and acked the `inbox_entry` passed in (any outcome); else the caller acks it."""


class Outcomes:
    """One per agent frame (or per session with a shared writer): a database session and the scheduler client.

    With a `writer` no session is needed (None): the writer commits on connections of its own.
    """

    def __init__(
        self,
        session: AsyncSession | None,
        scheduler: SchedulerClient,
        *,
        writer: ResultWriter | None = None,
        redis_lane: asyncio.Semaphore | None = None,
    ) -> None:
        """`writer`: commit agent outcomes in the process' shared batches instead of one transaction each.

        `redis_lane`: held around the scheduler call of `record_result`/`record_failure` only (not the
        commit wait), so a bound on Redis work does not also cap how many results a batch gathers.
        """
        self._session = session
        self._writer = writer
        self._redis_lane = redis_lane
        self._scheduler = scheduler

    # Results from agents (the WebSocket engineer calls these).
    #
    # Order: the scheduler first, then the database, then the ack.
    #   1. `scheduler.complete/fail` is the fence: one Lua script checks (task, attempt, agent) and
    #      moves the task, so two copies of a result, or a stale attempt, can never both win. The
    #      database cannot fence by itself: its attempt/agent columns trail Redis (the recorder is
    #      asynchronous), so a fast task's row may not show its assignment yet.
    #   2. The outcome (result or error) is written with a conditional UPDATE that only fills an
    #      empty slot, and committed. A duplicate frame (Redis says DUPLICATE) re-runs this step,
    #      which also repairs a crash between 1 and 2.
    #   3. Only then does the caller ack the agent. Until the ack, the agent resends.
    # So a result is recorded exactly once (first committed write wins) and acked only after commit.

    async def record_result(
        self, task_id: str, attempt: int, agent_id: str, output: Any, *, inbox_entry: str = ""
    ) -> Recorded:
        """Record an agent's result; ack the agent only when the answer says `ack`.

        `inbox_entry`: the attempt's submit entry in the agent's inbox, acked by the scheduler's script call
        (`entry_acked` in the answer says it ran).

        Raises whatever Redis or the database raise when they are down: then nothing is acked and
        the agent resends (a resend is answered as a duplicate once the first one got through).
        """
        encoded = msgspec.json.encode(output)
        if len(encoded) > MAX_TASK_OUTPUT_BYTES:
            return Recorded(False, False, None, ErrorCode.PAYLOAD_TOO_LARGE)
        async with self._redis_lane or contextlib.nullcontext():
            # Redis keeps the output a while: if this process dies before the commit, the reconciler fills it in.
            applied = await self._scheduler.complete(task_id, attempt, agent_id, encoded, inbox_entry=inbox_entry)
        acked = inbox_entry != ""
        if applied.outcome not in (Outcome.OK, Outcome.DUPLICATE):
            refusal = _REFUSALS.get(applied.outcome, ErrorCode.CONFLICT)
            return Recorded(False, False, applied.status, refusal, entry_acked=acked)
        params = {
            "b_id": task_id,
            "b_output": output,
            "b_attempt": attempt,
            "b_agent": agent_id,
            "b_now": utcnow(),
            "b_seq": -1 if applied.seq is None else applied.seq,
            "b_prior": applied.prior,
        }
        if applied.status == TaskStatus.CANCELED:
            # The attempt was canceled while it ran: its (partial) output is kept, the status stays.
            await self._write("partial", params)
            return Recorded(True, applied.outcome == Outcome.DUPLICATE, str(TaskStatus.CANCELED), entry_acked=acked)
        await self._write("result", params)
        return Recorded(True, applied.outcome == Outcome.DUPLICATE, str(TaskStatus.DONE), entry_acked=acked)

    async def record_failure(
        self,
        task_id: str,
        attempt: int,
        agent_id: str,
        *,
        error: str,
        message: str,
        retryable: bool,
        retry_delay_s: float | None,
        inbox_entry: str = "",
    ) -> Recorded:
        """Same order as `record_result` (`inbox_entry` too). A retry (`scheduled`) keeps the error as the latest."""
        async with self._redis_lane or contextlib.nullcontext():
            applied = await self._scheduler.fail(
                task_id,
                attempt,
                agent_id,
                error=error,
                message=message,
                retryable=retryable,
                retry_delay_s=retry_delay_s,
                inbox_entry=inbox_entry,
            )
        acked = inbox_entry != ""
        if applied.outcome not in (Outcome.OK, Outcome.DUPLICATE):
            refusal = _REFUSALS.get(applied.outcome, ErrorCode.CONFLICT)
            return Recorded(False, False, applied.status, refusal, entry_acked=acked)
        status = applied.status or str(TaskStatus.FAILED)
        params: dict[str, Any] = {
            "b_id": task_id,
            "b_error": {"error": error, "message": message, "attempt": attempt, "retryable": retryable},
            "b_attempt": attempt,
            "b_agent": agent_id,
            "b_now": utcnow(),
            "b_seq": -1 if applied.seq is None else applied.seq,
        }
        if status == TaskStatus.FAILED:
            await self._write("failed", params)
        else:
            # A retry: record the error; the status follows through the recorder (seq-ordered).
            await self._write("retry", params | {"b_status": status})
        return Recorded(True, applied.outcome == Outcome.DUPLICATE, status, entry_acked=acked)

    async def _write(self, kind: Kind, params: dict[str, Any]) -> None:
        """Commit one outcome: through the process' batch writer, or in this session's own transaction."""
        if self._writer is not None:
            await self._writer.write(kind, params)
            return
        if self._session is None:
            raise RuntimeError("Outcomes needs a session or a writer")
        await apply_writes(await self._session.connection(), [(kind, params)])
        await self._session.commit()
