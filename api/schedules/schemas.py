"""Bodies and views of `/api/schedules` (camelCase on the wire; unknown fields refused)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from api.tasks.schemas import TaskCreate

__all__ = (
    "MAX_INTERVAL_S",
    "MisfirePolicy",
    "OverlapPolicy",
    "ScheduleCreate",
    "SchedulePage",
    "ScheduleRunPage",
    "ScheduleRunView",
    "ScheduleUpdate",
    "ScheduleView",
)

MAX_INTERVAL_S = 366 * 24 * 3600
MisfirePolicy = Literal["fire_once", "skip"]
OverlapPolicy = Literal["allow", "skip"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Cron = Annotated[str, msgspec.Meta(min_length=9, max_length=120)]
Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Interval = Annotated[int, msgspec.Meta(ge=1, le=MAX_INTERVAL_S)]


class ScheduleCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name
    task: TaskCreate
    """What each firing submits, as a `POST /api/tasks` body (without `runAt` and `idempotencyKey`)."""
    cron: Cron | None = None
    """5-field cron expression, evaluated in `timezone`. Exactly one of `cron` and `intervalSeconds`."""
    timezone: Zone = "UTC"
    """IANA time zone of `cron`."""
    interval_seconds: Interval | None = None
    """Fire every N seconds from creation (or from the last update of the timing)."""
    misfire_policy: MisfirePolicy = "fire_once"
    """Occurrences missed while nothing could fire: `fire_once` (one catch-up run) or `skip`."""
    overlap_policy: OverlapPolicy = "allow"
    """`skip`: do not submit while the previous run's task is unfinished."""
    paused: bool = False


class ScheduleUpdate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Only the fields given change; changing the timing restarts it from now."""

    name: Name | None = None
    task: TaskCreate | None = None
    cron: Cron | None = None
    timezone: Zone | None = None
    interval_seconds: Interval | None = None
    misfire_policy: MisfirePolicy | None = None
    overlap_policy: OverlapPolicy | None = None


class ScheduleView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    id: str
    name: str
    owner_id: str
    task: dict[str, Any]
    timezone: str
    misfire_policy: str
    overlap_policy: str
    paused: bool
    next_fire_times: list[dt.datetime]
    """The next five firings (empty while paused)."""
    created_at: dt.datetime
    updated_at: dt.datetime
    cron: str | None = None
    interval_seconds: int | None = None
    last_fire_at: dt.datetime | None = None
    last_task_id: str | None = None


class SchedulePage(msgspec.Struct, rename="camel", kw_only=True):
    items: list[ScheduleView]
    total: int
    page: int
    page_size: int


class ScheduleRunView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    fire_at: dt.datetime
    outcome: str
    """submitted | skipped_overlap | skipped_misfire | error."""
    at: dt.datetime
    task_id: str | None = None
    detail: str | None = None


class ScheduleRunPage(msgspec.Struct, rename="camel", kw_only=True):
    items: list[ScheduleRunView]
    total: int
    page: int
    page_size: int
