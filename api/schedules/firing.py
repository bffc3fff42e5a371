"""Fire due schedules: each occurrence submits an ordinary task through `TaskService.submit`.

Run periodically by the jobs process (`fire_schedules`). Exactly once per occurrence, however many
jobs processes run: due rows are locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite has one
writer), the task's idempotency key is `schedule:<id>:<occurrence in ms>`, and `schedule_runs` has
one row per (schedule, occurrence). A crash between the submit and the bookkeeping is healed by the
next run: the same key answers with the same task.

Misfires: occurrences older than `schedule_misfire_grace_s` when they are handled were missed (no
jobs process ran). `fire_once` submits one task for all of them (at the latest); `skip` submits none
and records one `skipped_misfire` run. On-time occurrences always fire. Overlap `skip`: no task is
submitted while the last one this schedule submitted is unfinished (`skipped_overlap` run).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.auth.identity import CurrentUser
from api.db.models.schedules import Schedule, ScheduleRun
from api.db.models.tasks import Task
from api.db.models.users import User
from api.errors import ApiError
from api.schedules.timing import next_after
from api.tasks.schemas import TaskCreate
from api.tasks.service import TaskService
from protocol.status import TERMINAL_STATUSES

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.settings import OpsSettings
    from scheduler.client import SchedulerClient

__all__ = ("fire_due", "occurrence_key")

logger = logging.getLogger(__name__)

MAX_CATCH_UP = 1000
"""Occurrences walked per schedule per run (a long outage of a per-minute schedule is capped here)."""
_TERMINAL = {str(s) for s in TERMINAL_STATUSES}


def occurrence_key(schedule_id: str, fire_at: dt.datetime) -> str:
    return f"schedule:{schedule_id}:{int(fire_at.timestamp() * 1000)}"


def _due(row: Schedule, now: dt.datetime) -> tuple[list[dt.datetime], dt.datetime | None]:
    """Occurrences at or before `now` from `next_fire_at`, and the first one after."""
    due: list[dt.datetime] = []
    current = row.next_fire_at
    while current is not None and current <= now and len(due) < MAX_CATCH_UP:
        due.append(current)
        current = next_after(
            current, cron=row.cron, timezone=row.timezone, interval_s=row.interval_s, anchor=row.anchor_at
        )
    if current is not None and current <= now:
        # Capped: jump to the first occurrence after now.
        current = next_after(now, cron=row.cron, timezone=row.timezone, interval_s=row.interval_s, anchor=row.anchor_at)
    return due, current


class _Firing:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], scheduler: SchedulerClient, session: AsyncSession
    ) -> None:
        self._sessionmaker = sessionmaker
        self._scheduler = scheduler
        self._session = session

    def _run(self, row: Schedule, fire_at: dt.datetime, outcome: str, **kw: Any) -> None:
        self._session.add(ScheduleRun(schedule_id=row.id, fire_at=fire_at, outcome=outcome, **kw))

    async def _previous_unfinished(self, row: Schedule) -> bool:
        if row.last_task_id is None:
            return False
        status = await self._session.scalar(select(Task.status).where(Task.id == row.last_task_id))
        return status is not None and status not in _TERMINAL

    async def _submit(self, row: Schedule, owner: CurrentUser, fire_at: dt.datetime) -> None:
        template = msgspec.convert(row.template, TaskCreate)
        # The same path as REST, in its own session (it commits); no user rate limit: the schedule was admitted.
        async with self._sessionmaker() as session:
            try:
                view, _ = await TaskService(session, self._scheduler).submit(
                    owner, template, occurrence_key(row.id, fire_at)
                )
            except ApiError as exc:
                self._run(row, fire_at, "error", detail=f"{exc.code}: {exc.message}"[:500])
                return
        row.last_task_id = view.id
        self._run(row, fire_at, "submitted", task_id=view.id)

    async def fire(self, row: Schedule, owner: CurrentUser | None, now: dt.datetime, grace_s: float) -> int:
        due, following = _due(row, now)
        missed = [t for t in due if (now - t).total_seconds() > grace_s]
        fire = [t for t in due if t not in missed]
        if missed:
            if row.misfire_policy == "fire_once" and not fire:
                fire = [missed[-1]]
            elif row.misfire_policy == "skip" or fire:
                self._run(row, missed[-1], "skipped_misfire", detail=f"{len(missed)} occurrence(s) missed")
        submitted = 0
        for fire_at in fire:
            if owner is None:
                self._run(row, fire_at, "error", detail="the owner is disabled")
            elif row.overlap_policy == "skip" and await self._previous_unfinished(row):
                self._run(row, fire_at, "skipped_overlap", task_id=row.last_task_id)
            else:
                await self._submit(row, owner, fire_at)
                submitted += 1
        if due:
            row.last_fire_at = due[-1]
        row.next_fire_at = following
        return submitted


async def _owner(session: AsyncSession, owner_id: str) -> CurrentUser | None:
    user = await session.get(User, owner_id)
    if user is None or not user.is_active:
        return None
    return CurrentUser(id=user.id, email=user.email, name=user.name, role=user.role, jti="", token_exp=0)


async def fire_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    scheduler: SchedulerClient,
    settings: OpsSettings,
    *,
    now: dt.datetime,
    batch: int = 100,
) -> int:
    """Fire every schedule due at `now` (a parameter: tests control the clock); returns tasks submitted."""
    submitted = 0
    while True:
        async with sessionmaker() as session:
            query = (
                select(Schedule)
                .where(Schedule.paused.is_(False), Schedule.next_fire_at <= now)
                .order_by(Schedule.next_fire_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
            rows = list((await session.execute(query)).scalars())
            if not rows:
                return submitted
            firing = _Firing(sessionmaker, scheduler, session)
            # Nothing of this batch is written before its commit: each task is submitted in a session of its
            # own, and on SQLite a flushed write here would hold the one write lock those submits wait for.
            with session.no_autoflush:
                for row in rows:
                    owner = await _owner(session, row.owner_id)
                    submitted += await firing.fire(row, owner, now, settings.schedule_misfire_grace_s)
            try:
                await session.commit()
            except IntegrityError:
                # Another process recorded these occurrences first (it fired them; the tasks are shared by key).
                await session.rollback()
                logger.info("schedules: a batch was fired concurrently elsewhere")
                return submitted
        if len(rows) < batch:
            return submitted
