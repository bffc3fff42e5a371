"""The planner's tables (seed 002): a person's to-do tasks with steps, chat sessions and their messages,
per-user LLM settings (the API key only as ciphertext), and the jobs that tie an HTTP request to the
scheduler task doing its LLM work, so a result that missed the HTTP bound is still applied.

Planner ids are integers (seed 002); they are not the scheduler's task ids (`tasks.id`, UUID strings).
"""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, IdColumn, JsonColumn, UTCDateTime, utcnow

__all__ = (
    "PLANNER_ID_TYPE",
    "LlmSettingsRow",
    "PlannerJob",
    "PlannerMessage",
    "PlannerSession",
    "PlannerStep",
    "PlannerTask",
)

PLANNER_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")
"""BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid)."""


def _user_fk() -> ForeignKey:
    return ForeignKey("users.id", ondelete="CASCADE")


class PlannerTask(Base):
    __tablename__ = "planner_tasks"
    __table_args__ = (Index(None, "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(PLANNER_ID_TYPE, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), _user_fk())
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    """todo | in_progress | done | cancelled."""
    priority: Mapped[str] = mapped_column(String(8))
    """low | medium | high."""
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlannerStep(Base):
    __tablename__ = "planner_steps"
    __table_args__ = (Index(None, "task_id", "order_index"),)

    id: Mapped[int] = mapped_column(PLANNER_ID_TYPE, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(PLANNER_ID_TYPE, ForeignKey("planner_tasks.id", ondelete="CASCADE"))
    order_index: Mapped[int] = mapped_column(Integer)
    """1-based position within the task."""
    title: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    """locked | todo | in_progress | done | blocked."""
    blocking_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    estimate_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    planned_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    planned_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlannerSession(Base):
    __tablename__ = "planner_sessions"
    __table_args__ = (Index(None, "user_id"), Index(None, "task_id"))

    id: Mapped[int] = mapped_column(PLANNER_ID_TYPE, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), _user_fk())
    task_id: Mapped[int | None] = mapped_column(
        PLANNER_ID_TYPE, ForeignKey("planner_tasks.id", ondelete="CASCADE"), nullable=True
    )
    type: Mapped[str] = mapped_column(String(8))
    """task | global."""
    default_key: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    """`global:<userId>` or `task:<taskId>` for the one session of each kind (concurrent creators collide
    here, on both databases: NULLs never conflict, a partial index would need dialect-specific DDL)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlannerMessage(Base):
    __tablename__ = "planner_messages"
    __table_args__ = (Index(None, "session_id", "created_at"),)

    id: Mapped[int] = mapped_column(PLANNER_ID_TYPE, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(PLANNER_ID_TYPE, ForeignKey("planner_sessions.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    """user | assistant | system."""
    agent_name: Mapped[str | None] = mapped_column(String(32), nullable=True)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LlmSettingsRow(Base):
    """One user's LLM provider settings; the API key is AES-GCM ciphertext bound to the user id."""

    __tablename__ = "planner_llm_settings"

    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), _user_fk(), primary_key=True)
    base_url: Mapped[str] = mapped_column(String(2048))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    api_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlannerJob(Base):
    """One LLM-backed request: the scheduler task (found by `task_key`, its idempotency key) and what it produced.

    `pending` until applied; then `done` with `result` (ids of the rows written) or `failed` with `error`.
    Applying is a conditional update on `state`, so any API replica may do it and only one wins.
    """

    __tablename__ = "planner_jobs"
    __table_args__ = (Index(None, "state", "created_at"), Index(None, "user_id", "task_key"))

    id: Mapped[str] = mapped_column(IdColumn, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), _user_fk())
    kind: Mapped[str] = mapped_column(String(16))
    """from_text | reply."""
    task_key: Mapped[str] = mapped_column(String(64))
    """The scheduler task's idempotency key (`planner:<job id>`), unique per owner in `tasks`."""
    session_id: Mapped[int | None] = mapped_column(
        PLANNER_ID_TYPE, ForeignKey("planner_sessions.id", ondelete="CASCADE"), nullable=True
    )
    """Reply jobs: the session answered (its /ws watchers get the task's events)."""
    state: Mapped[str] = mapped_column(String(16), default="pending")
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonColumn, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
