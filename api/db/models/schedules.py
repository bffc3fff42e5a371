"""The `schedules` table (recurring task templates) and `schedule_runs` (what each firing did)."""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime
import uuid
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, IdColumn, JsonColumn, UTCDateTime, utcnow

__all__ = ("Schedule", "ScheduleRun")


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (Index(None, "owner_id", "created_at"), Index(None, "paused", "next_fire_at"))

    id: Mapped[str] = mapped_column(IdColumn, primary_key=True, default=lambda: str(uuid.uuid4()))
    owner_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str | None] = mapped_column(String(120), nullable=True)
    timezone: Mapped[str] = mapped_column(String(64))
    interval_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    template: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    """The task to submit, as a `POST /api/tasks` body (camelCase), without runAt/idempotencyKey."""
    misfire_policy: Mapped[str] = mapped_column(String(16))
    overlap_policy: Mapped[str] = mapped_column(String(16))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    anchor_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """Interval schedules fire at anchor + k * interval."""
    next_fire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_fire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "fire_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    schedule_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """The occurrence (not when the job ran)."""
    outcome: Mapped[str] = mapped_column(String(24))
    """submitted | skipped_overlap | skipped_misfire | error."""
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(500), nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
