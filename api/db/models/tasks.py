"""The `tasks` and `task_events` tables: the durable record of every task and its history.

The database is the source of truth for what was accepted; Redis holds the live queues. The
recorder copies events here; the reconciler rebuilds Redis from here. Status changes live on the
task row (`history`); `task_events` keeps the `task/stream` pieces (and rows of older versions).
"""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, IdColumn, JsonColumn, UTCDateTime, utcnow

__all__ = ("EVENT_ID_TYPE", "Task", "TaskEvent")

# BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid).
EVENT_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


def _partial(name: str, *columns: str, where: str, unique: bool = False) -> Index:
    """An index holding only the rows `where` matches (PostgreSQL and SQLite alike)."""
    return Index(name, *columns, unique=unique, postgresql_where=text(where), sqlite_where=text(where))


class Task(Base):
    __tablename__ = "tasks"
    # A row no partial index below takes costs those indexes nothing when it is inserted or updated. A task's
    # last UPDATE changes `status` (and `finished_at`, `assigned_agent_id`), so it is never a HOT update and
    # writes an entry into every index whose predicate the new row meets: the common case, a keyless unpinned
    # task ending `done`, skips the idempotency, status and pinned-agent indexes (and the finish-time and
    # assigned-agent ones at the INSERT). Every query filtering on these columns implies the predicate (an
    # equality or range on the column; `status` other than `done`), so each still finds its index.
    __table_args__ = (
        _partial(
            "uq_tasks_owner_id_idempotency_key",
            "owner_id",
            "idempotency_key",
            where="idempotency_key IS NOT NULL",
            unique=True,
        ),
        _partial("ix_tasks_status", "status", where="status <> 'done'"),
        Index(None, "owner_id", "created_at"),
        Index(None, "type"),
        _partial("ix_tasks_agent_id", "agent_id", where="agent_id IS NOT NULL"),
        _partial("ix_tasks_assigned_agent_id", "assigned_agent_id", where="assigned_agent_id IS NOT NULL"),
        Index(None, "created_at"),
        _partial("ix_tasks_finished_at", "finished_at", where="finished_at IS NOT NULL"),
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
    history: Mapped[list[list[Any]] | None] = mapped_column(JsonColumn, nullable=True)
    """Status changes, oldest first, as compact `[seq, status, attempt, agent_id, data, at_ms]` entries
    (see api/tasks/history.py). NULL on rows older than this column: their history is in task_events."""


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
