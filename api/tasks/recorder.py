"""The recorder: copies the scheduler's event stream into the database, idempotently.

Every API replica runs one (consumer group `recorder`, one consumer per replica). A batch is applied
in one transaction, then acknowledged: a crash in between replays the batch, which changes nothing
(event rows are `ON CONFLICT DO NOTHING`; a row moves only forward in `seq` and never out of a
terminal status).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import func, select, update

from api.db.models.tasks import Task, TaskEvent
from api.tasks._background import BackgroundLoop
from api.tasks.events import insert_events_ignore_duplicates
from protocol.status import TERMINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.metrics import Metrics
    from scheduler.client import SchedulerClient
    from scheduler.types import TaskEvent as SchedulerEvent

__all__ = ("Recorder", "default_consumer_name")

logger = logging.getLogger(__name__)

_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_WAITING = (str(TaskStatus.QUEUED), str(TaskStatus.SCHEDULED))
_PROGRESS_KEYS = ("data", "message")


def default_consumer_name() -> str:
    """Unique per process: `host-pid-random` (a restarted replica is a new consumer)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _event_data(event: SchedulerEvent) -> dict[str, Any] | None:
    if event.type == "task/progress":
        try:
            payload = msgspec.json.decode(event.payload_json)
        except msgspec.DecodeError:
            return None
        if not isinstance(payload, dict):
            return None
        return {k: payload[k] for k in _PROGRESS_KEYS if k in payload}
    return {"reason": event.reason} if event.reason else None


def _row(event: SchedulerEvent) -> dict[str, Any]:
    return {
        "task_id": event.task_id,
        "seq": event.seq,
        "type": event.type,
        "status": event.status if event.type == "task/status" else None,
        "attempt": event.attempt,
        "agent_id": event.agent_id or None,
        "data": _event_data(event),
        "at": _at(event.at_ms),
    }


def _status_values(event: SchedulerEvent, at: dt.datetime) -> dict[str, Any]:
    status = event.status or ""
    values: dict[str, Any] = {
        "status": status,
        "seq": event.seq,
        "attempt": event.attempt,
        "updated_at": at,
    }
    if event.agent_id:
        values["assigned_agent_id"] = event.agent_id
    elif status in _WAITING:
        values["assigned_agent_id"] = None
    if status == TaskStatus.RUNNING:
        values["started_at"] = func.coalesce(Task.started_at, at)
    if status in _TERMINAL:
        values["finished_at"] = func.coalesce(Task.finished_at, at)
    return values


class Recorder(BackgroundLoop):
    """Reads event batches and applies them; `run()` loops until `stop()`."""

    def __init__(
        self,
        scheduler: SchedulerClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        consumer: str | None = None,
        batch_size: int = 200,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        metrics: Metrics | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._sessionmaker = sessionmaker
        self.consumer = consumer or default_consumer_name()
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._metrics = metrics
        super().__init__()
        self.name = f"recorder:{self.consumer}"

    async def run_once(self, *, block_ms: int | None = None) -> int:
        """Read one batch, apply it, ack it. Returns the number of events read."""
        events = await self._scheduler.read_events(
            self.consumer, block_ms=self._block_ms if block_ms is None else block_ms, count=self._batch_size
        )
        if not events:
            return 0
        await self.apply(events)
        await self._scheduler.ack_events([e.entry_id for e in events])
        return len(events)

    async def claim_stale(self) -> int:
        """Take over events another (crashed) replica read but never acknowledged, apply and ack them."""
        events = await self._scheduler.claim_events_pending(
            self.consumer, min_idle_ms=self._claim_idle_ms, count=self._batch_size
        )
        if not events:
            return 0
        await self.apply(events)
        await self._scheduler.ack_events([e.entry_id for e in events])
        logger.warning("recorder took over %d unacknowledged events", len(events))
        return len(events)

    async def drain(self, *, max_batches: int = 1000) -> int:
        """Apply everything available now, without blocking (tests, shutdown)."""
        total = 0
        for _ in range(max_batches):
            n = await self.run_once(block_ms=0)
            if n == 0:
                break
            total += n
        return total

    async def apply(self, events: list[SchedulerEvent]) -> None:
        """Apply one batch in one transaction. Safe to call again with the same events."""
        async with self._sessionmaker() as session:
            ids = {e.task_id for e in events}
            known = set((await session.execute(select(Task.id).where(Task.id.in_(ids)))).scalars())
            mine = [e for e in events if e.task_id in known]
            if len(mine) != len(events):
                # Tasks without a row were never accepted through this database (e.g. enqueued
                # by a tool straight into Redis); nothing to record for them.
                logger.debug("recorder skipped %d events of unknown tasks", len(events) - len(mine))
            inserted = await insert_events_ignore_duplicates(session, [_row(e) for e in mine])
            for event in mine:
                await self._apply_row(session, event, (event.task_id, event.seq) in inserted)
            latencies = await self._dispatch_latencies(session, mine, inserted)
            await session.commit()
        if self._metrics is not None:
            self._metrics.recorded_events.inc(len(inserted))
            for seconds in latencies:
                self._metrics.dispatch_latency.observe(seconds)

    @staticmethod
    async def _apply_row(session: AsyncSession, event: SchedulerEvent, new: bool) -> None:
        at = _at(event.at_ms)
        fresh = (Task.id == event.task_id, Task.seq < event.seq, Task.status.not_in(_TERMINAL))
        if event.type == "task/status" and event.status:
            await session.execute(update(Task).where(*fresh).values(**_status_values(event, at)))
            if event.status == TaskStatus.FAILED:
                # An agent's own error (written by TaskService.record_failure) wins over the bare reason.
                reason = event.reason or "failed"
                await session.execute(
                    update(Task)
                    .where(Task.id == event.task_id, Task.status == str(TaskStatus.FAILED), Task.error.is_(None))
                    .values(error={"error": reason, "message": reason})
                )
            if new and event.status == TaskStatus.RUNNING:
                # A later event may have overtaken this one (a result recorded first): keep the start.
                await session.execute(
                    update(Task).where(Task.id == event.task_id, Task.started_at.is_(None)).values(started_at=at)
                )
        else:
            await session.execute(update(Task).where(*fresh).values(seq=event.seq, updated_at=at))

    @staticmethod
    async def _dispatch_latencies(
        session: AsyncSession, events: list[SchedulerEvent], inserted: set[tuple[str, int]]
    ) -> list[float]:
        """queued -> assigned, for assignments recorded now (a replayed event is not counted twice)."""
        assigned = [
            e
            for e in events
            if e.type == "task/status" and e.status == TaskStatus.ASSIGNED and (e.task_id, e.seq) in inserted
        ]
        if not assigned:
            return []
        ids = {e.task_id for e in assigned}
        queued: dict[str, list[tuple[int, dt.datetime]]] = {}
        rows = await session.execute(
            select(TaskEvent.task_id, TaskEvent.seq, TaskEvent.at).where(
                TaskEvent.task_id.in_(ids), TaskEvent.status == str(TaskStatus.QUEUED)
            )
        )
        for task_id, seq, at in rows.all():
            queued.setdefault(task_id, []).append((seq, at))
        starts = select(Task.id, func.coalesce(Task.run_at, Task.created_at)).where(Task.id.in_(ids))
        created = {r[0]: r[1] for r in (await session.execute(starts)).all()}
        out: list[float] = []
        for event in assigned:
            before = [at for seq, at in queued.get(event.task_id, []) if seq < event.seq]
            start = max(before) if before else created.get(event.task_id)
            if start is None:
                continue
            start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
            out.append(max(0.0, (_at(event.at_ms) - start).total_seconds()))
        return out

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Loop until stopped. Errors are logged and retried with a capped backoff."""
        delay = 0.5
        loop = asyncio.get_running_loop()
        next_claim = loop.time()
        while self.running:
            try:
                if loop.time() >= next_claim:
                    next_claim = loop.time() + self._claim_idle_ms / 1000
                    await self.claim_stale()
                await self.run_once()
                delay = 0.5
            except Exception:
                self.raise_if_cancelling()
                logger.exception("recorder batch failed; retrying in %.1f s", delay)
                await self.pause(delay)
                delay = min(delay * 2, 30.0)
