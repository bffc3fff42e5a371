"""Schedules CRUD, owner-scoped (admins see all). Firing is `api.schedules.firing`, run by the jobs process."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import delete, func, select

from api.db.base import utcnow
from api.db.models.schedules import Schedule, ScheduleRun
from api.errors import ConflictError, NotFoundError, PayloadTooLargeError, ValidationFailedError
from api.schedules.schemas import (
    SchedulePage,
    ScheduleRunPage,
    ScheduleRunView,
    ScheduleView,
)
from api.schedules.timing import check_cron, check_timezone, next_after, next_times
from protocol.limits import MAX_ID_LENGTH, MAX_TASK_INPUT_BYTES

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession

    from api.auth.identity import CurrentUser
    from api.schedules.schemas import ScheduleCreate, ScheduleUpdate
    from api.settings import OpsSettings
    from api.tasks.schemas import TaskCreate

__all__ = ("ScheduleService", "schedule_view")

UPCOMING = 5


@dataclasses.dataclass(frozen=True, slots=True)
class _Timing:
    cron: str | None
    timezone: str
    interval_s: int | None


def schedule_view(row: Schedule) -> ScheduleView:
    upcoming: list[dt.datetime] = []
    if not row.paused and row.next_fire_at is not None:
        later = next_times(
            row.next_fire_at,
            UPCOMING - 1,
            cron=row.cron,
            timezone=row.timezone,
            interval_s=row.interval_s,
            anchor=row.anchor_at,
        )
        upcoming = [row.next_fire_at, *later]
    return ScheduleView(
        id=row.id,
        name=row.name,
        owner_id=row.owner_id,
        task=row.template,
        timezone=row.timezone,
        misfire_policy=row.misfire_policy,
        overlap_policy=row.overlap_policy,
        paused=row.paused,
        next_fire_times=upcoming,
        created_at=row.created_at,
        updated_at=row.updated_at,
        cron=row.cron,
        interval_seconds=row.interval_s,
        last_fire_at=row.last_fire_at,
        last_task_id=row.last_task_id,
    )


class ScheduleService:
    def __init__(self, session: AsyncSession, settings: OpsSettings) -> None:
        self._session = session
        self._settings = settings

    def _check_timing(self, timing: _Timing) -> None:
        if (timing.cron is None) == (timing.interval_s is None):
            raise ValidationFailedError("give exactly one of cron and intervalSeconds", {"field": "cron"})
        problem = check_timezone(timing.timezone)
        if problem:
            raise ValidationFailedError(problem, {"field": "timezone"})
        if timing.cron is not None:
            problem = check_cron(timing.cron)
            if problem:
                raise ValidationFailedError(problem, {"field": "cron"})
        if timing.interval_s is not None and timing.interval_s < self._settings.schedule_min_interval_s:
            raise ValidationFailedError(
                f"intervalSeconds must be at least {self._settings.schedule_min_interval_s}",
                {"field": "intervalSeconds"},
            )

    @staticmethod
    def _template(task: TaskCreate) -> dict[str, Any]:
        if task.run_at is not None or task.idempotency_key is not None:
            raise ValidationFailedError(
                "a schedule's task takes neither runAt nor idempotencyKey (each firing sets its own)",
                {"field": "task"},
            )
        if task.agent_id is not None and task.capabilities:
            raise ValidationFailedError("give agentId or capabilities, not both", {"field": "task.capabilities"})
        if len(msgspec.json.encode(task.input)) > MAX_TASK_INPUT_BYTES:
            raise PayloadTooLargeError(f"input is over {MAX_TASK_INPUT_BYTES} bytes", {"field": "task.input"})
        template: dict[str, Any] = msgspec.to_builtins(task)
        return {k: v for k, v in template.items() if v is not None}

    def _reschedule(self, row: Schedule, now: dt.datetime) -> None:
        row.next_fire_at = next_after(
            now, cron=row.cron, timezone=row.timezone, interval_s=row.interval_s, anchor=row.anchor_at
        )

    async def create(self, user: CurrentUser, data: ScheduleCreate) -> ScheduleView:
        timing = _Timing(data.cron, data.timezone, data.interval_seconds)
        self._check_timing(timing)
        template = self._template(data.task)
        owned = await self._session.scalar(select(func.count()).where(Schedule.owner_id == user.id))
        if int(owned or 0) >= self._settings.schedules_per_user:
            raise ConflictError(f"at most {self._settings.schedules_per_user} schedules per user")
        now = utcnow()
        row = Schedule(
            owner_id=user.id,
            name=data.name,
            cron=data.cron,
            timezone=data.timezone,
            interval_s=data.interval_seconds,
            template=template,
            misfire_policy=data.misfire_policy,
            overlap_policy=data.overlap_policy,
            paused=data.paused,
            anchor_at=now,
            created_at=now,
            updated_at=now,
        )
        self._reschedule(row, now)
        self._session.add(row)
        await self._session.commit()
        return schedule_view(row)

    async def get_visible(self, user: CurrentUser, schedule_id: str) -> Schedule:
        row = await self._session.get(Schedule, schedule_id) if len(schedule_id) <= MAX_ID_LENGTH else None
        if row is None or not (user.is_admin or row.owner_id == user.id):
            raise NotFoundError("no such schedule")
        return row

    async def list_page(self, user: CurrentUser, *, page: int, page_size: int) -> SchedulePage:
        where = [] if user.is_admin else [Schedule.owner_id == user.id]
        total = int(await self._session.scalar(select(func.count()).select_from(Schedule).where(*where)) or 0)
        query = (
            select(Schedule)
            .where(*where)
            .order_by(Schedule.created_at.desc(), Schedule.id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        rows = (await self._session.execute(query)).scalars()
        return SchedulePage(items=[schedule_view(r) for r in rows], total=total, page=page, page_size=page_size)

    async def update(self, user: CurrentUser, schedule_id: str, data: ScheduleUpdate) -> ScheduleView:
        row = await self.get_visible(user, schedule_id)
        timing_changed = data.cron is not None or data.interval_seconds is not None or data.timezone is not None
        if timing_changed:
            # Switching kind: the given one replaces the other.
            cron = data.cron if data.cron is not None else (None if data.interval_seconds is not None else row.cron)
            interval = (
                data.interval_seconds
                if data.interval_seconds is not None
                else (None if data.cron is not None else row.interval_s)
            )
            timing = _Timing(cron, data.timezone or row.timezone, interval)
            self._check_timing(timing)
            row.cron, row.timezone, row.interval_s = timing.cron, timing.timezone, timing.interval_s
        if data.task is not None:
            row.template = self._template(data.task)
        if data.name is not None:
            row.name = data.name
        if data.misfire_policy is not None:
            row.misfire_policy = data.misfire_policy
        if data.overlap_policy is not None:
            row.overlap_policy = data.overlap_policy
        now = utcnow()
        if timing_changed:
            row.anchor_at = now
            self._reschedule(row, now)
        row.updated_at = now
        await self._session.commit()
        return schedule_view(row)

    async def set_paused(self, user: CurrentUser, schedule_id: str, *, paused: bool) -> ScheduleView:
        """Pausing stops firing; resuming continues from now (what fell in the pause is not caught up)."""
        row = await self.get_visible(user, schedule_id)
        if row.paused != paused:
            row.paused = paused
            now = utcnow()
            if not paused:
                self._reschedule(row, now)
            row.updated_at = now
            await self._session.commit()
        return schedule_view(row)

    async def delete(self, user: CurrentUser, schedule_id: str) -> None:
        row = await self.get_visible(user, schedule_id)
        await self._session.execute(delete(ScheduleRun).where(ScheduleRun.schedule_id == row.id))
        await self._session.delete(row)
        await self._session.commit()

    async def runs(self, user: CurrentUser, schedule_id: str, *, page: int, page_size: int) -> ScheduleRunPage:
        row = await self.get_visible(user, schedule_id)
        total = int(await self._session.scalar(select(func.count()).where(ScheduleRun.schedule_id == row.id)) or 0)
        query = (
            select(ScheduleRun)
            .where(ScheduleRun.schedule_id == row.id)
            .order_by(ScheduleRun.fire_at.desc())
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        items = [
            ScheduleRunView(fire_at=r.fire_at, outcome=r.outcome, at=r.at, task_id=r.task_id, detail=r.detail)
            for r in (await self._session.execute(query)).scalars()
        ]
        return ScheduleRunPage(items=items, total=total, page=page, page_size=page_size)
