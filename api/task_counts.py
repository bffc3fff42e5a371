"""Task counts by status for `/metrics`, kept as tasks change (scheduler/counts.py), never recounted per scrape.

The database is counted once, to seed the finished-task counters when Redis has none (first start, Redis
lost or flushed): every replica's scrape reads the same hash, and only the first seed applies.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from api.db.models.tasks import Task
from protocol.status import TERMINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from scheduler.client import SchedulerClient

__all__ = ("TaskCounts",)

_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)


class TaskCounts:
    """One replica's reader of the counts; seeds them from the database when they are missing."""

    def __init__(self, scheduler: SchedulerClient, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._scheduler = scheduler
        self._db = sessionmaker
        self._seeding = asyncio.Lock()
        self.seeds = 0
        """Seeds this replica applied (a test and the log read it)."""

    async def read(self) -> dict[str, int]:
        counts = await self._scheduler.task_counts()
        if counts is None:
            await self._seed()
            counts = await self._scheduler.task_counts() or {}
        out = {str(s): 0 for s in TaskStatus}
        out.update(counts)
        return out

    async def _seed(self) -> None:
        async with self._seeding:
            # What the scripts counted before the database is read is in the rows too: subtract it, so the
            # seed keeps only what they count from now on.
            before, seeded = await self._scheduler.finished_counts()
            if seeded:
                return
            async with self._db() as session:
                query = select(Task.status, func.count()).where(Task.status.in_(_TERMINAL)).group_by(Task.status)
                rows = (await session.execute(query)).all()
            in_db = {status: 0 for status in _TERMINAL}
            in_db.update({str(status): int(n) for status, n in rows})
            if await self._scheduler.seed_finished({s: n - before.get(s, 0) for s, n in in_db.items()}):
                self.seeds += 1
