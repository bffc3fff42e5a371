"""The background path: apply planner jobs whose task ended after their request gave up (504), on every replica.

Applying is idempotent (apply.py), so replicas need no leader: whichever gets a job first applies it, the others
find it done. Also fails jobs whose task never appeared (the request's process died in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from api.db.base import utcnow
from api.planner.apply import apply_job, expire_stale_jobs, finished_job_ids

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ("JobApplier",)

logger = logging.getLogger(__name__)

BATCH = 50


class JobApplier:
    """`start()` runs `run_once()` every `interval_s` until `stop()`."""

    def __init__(self, db: async_sessionmaker[AsyncSession], *, interval_s: float, stale_s: float) -> None:
        self._db = db
        self._interval_s = interval_s
        self._stale_s = stale_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="planner-applier")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def run_once(self) -> int:
        """Apply the finished jobs found now; returns how many this call applied or failed."""
        async with self._db() as session:
            ids = await finished_job_ids(session, limit=BATCH)
        count = 0
        for job_id in ids:
            job = await apply_job(self._db, job_id)
            count += job is not None and job.state in ("done", "failed")
        async with self._db() as session:
            count += await expire_stale_jobs(session, older_than=utcnow() - dt.timedelta(seconds=self._stale_s))
        return count

    async def _loop(self) -> None:
        while True:
            try:
                applied = await self.run_once()
                if applied:
                    logger.info("planner applier finished %d job(s)", applied)
            except SQLAlchemyError:
                logger.warning("planner applier pass failed (database error); retrying", exc_info=True)
            except Exception:
                logger.exception("planner applier pass failed; retrying")
            await asyncio.sleep(self._interval_s)
