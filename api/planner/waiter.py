"""Wait for a scheduler task to end without polling the database in a tight loop.

The process' fan-out already receives every task event (one pattern subscription per API replica). A waiter
registers in the /ws session registry like a watcher of the one task: a terminal `task/status` wakes it, and
it confirms in the database (the outcome is committed a moment after the event, so it re-reads a few times
with a short backoff). Pub/sub is at most once, so it also re-reads every `recheck_s` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import select

from api.db.models.tasks import Task
from protocol.status import TERMINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.ws.events import AgentStatusEvent, WatchEvent
    from api.ws.registry import SessionRegistry

__all__ = ("TaskWaiter",)

logger = logging.getLogger(__name__)

_CONFIRM_DELAYS_S = (0.01, 0.03, 0.1, 0.2, 0.5)
"""Re-reads after a terminal event until the outcome's commit shows (the result writer batches commits)."""
_TERMINAL = frozenset(str(s) for s in TERMINAL_STATUSES)


class _StatusPayload(msgspec.Struct):
    status: str | None = None


class _Frame(msgspec.Struct):
    type: str
    payload: _StatusPayload


_FRAME = msgspec.json.Decoder(_Frame)


class _Wakeup:
    """A registry watcher of one task: notes a terminal status, or that events may have been lost."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.terminal_seen = False

    def deliver(self, event: WatchEvent) -> None:
        try:
            frame = _FRAME.decode(event.frame)
        except msgspec.DecodeError:
            return
        if frame.type == "task/status" and frame.payload.status in _TERMINAL:
            self.terminal_seen = True
            self.changed.set()

    def deliver_agent_status(self, event: AgentStatusEvent) -> None:
        """Not an `all: true` watcher; never called."""

    def request_close(self, code: int, reason: str) -> None:
        # The fan-out lost its connection: events may be missing, so read the database now.
        self.changed.set()


class TaskWaiter:
    """One per process; `wait()` may be called by any number of requests at once."""

    def __init__(
        self, db: async_sessionmaker[AsyncSession], registry: SessionRegistry | None, *, recheck_s: float
    ) -> None:
        self._db = db
        self._registry = registry
        self._recheck_s = max(0.05, recheck_s)

    async def finished(self, task_id: str) -> bool:
        """Terminal in the database, with its outcome written."""
        async with self._db() as session:
            row = (
                await session.execute(select(Task.status, Task.result.is_not(None)).where(Task.id == task_id))
            ).first()
        if row is None or row[0] not in _TERMINAL:
            return False
        return row[0] != TaskStatus.DONE or bool(row[1])

    async def wait(self, task_id: str, timeout_s: float) -> bool:
        """True once the task has finished (confirmed in the database); False when `timeout_s` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        wake = _Wakeup()
        if self._registry is not None:
            self._registry.watch_task(task_id, wake)
        confirm = iter(_CONFIRM_DELAYS_S)
        try:
            while True:
                if await self.finished(task_id):
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                if wake.terminal_seen:
                    await asyncio.sleep(min(next(confirm, self._recheck_s), remaining))
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self._recheck_s, remaining)):
                        await wake.changed.wait()
                wake.changed.clear()
        finally:
            if self._registry is not None:
                self._registry.unwatch_task(task_id, wake)
