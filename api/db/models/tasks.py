"""The `tasks` and `task_events` tables: the durable record of every task and its history.

The database is the source of truth for what was accepted; Redis holds the live queues. The
recorder copies events here; the reconciler rebuilds Redis from here.
"""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, IdColumn, JsonColumn, UTCDateTime, utcnow

__all__ = ("EVENT_ID_TYPE", "Task", "TaskEvent")

# BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid).
EVENT_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index(None, "status"),
        Index(None, "owner_id", "created_at"),
        Index(None, "type"),
        Index(None, "agent_id"),
        Index(None, "assigned_agent_id"),
        Index(None, "created_at"),
        Index(None, "finished_at"),
    )

    id: Mapped[str] = mapped_column(IdColumn, primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(128))
    input: Mapped[Any] = mapped_column(JsonColumn)
    priority: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    """The agent the submitter pinned the task to (no foreign key: history outlives agents)."""
    capabilities: Mapped[list[str]] = mapped_column(JsonColumn)
    timeout_s: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    assigned_agent_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    result: Mapped[Any | None] = mapped_column(JsonColumn, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TaskEvent(Base):
    __tablename__ = "task_events"
    __table_args__ = (UniqueConstraint("task_id", "seq"),)

    id: Mapped[int] = mapped_column(EVENT_ID_TYPE, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
