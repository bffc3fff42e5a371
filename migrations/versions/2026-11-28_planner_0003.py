"""The planner: tasks with steps, sessions, messages, per-user LLM settings, jobs; agents.trusted.

Revision ID: 0003_planner
Revises: 0002_tasks
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import api.db.base

revision: str = "0003_planner"
down_revision: str | None = "0002_tasks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE")


def _times(*names: str, nullable: bool = False) -> list[sa.Column]:
    return [sa.Column(name, api.db.base.UTCDateTime(), nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "planner_llm_settings",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("base_url", sa.String(length=2048), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("api_key_enc", sa.LargeBinary(), nullable=True),
        *_times("created_at", "updated_at"),
        _user_fk("planner_llm_settings"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_planner_llm_settings")),
    )
    op.create_table(
        "planner_tasks",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("due_at", api.db.base.UTCDateTime(), nullable=True),
        *_times("created_at", "updated_at"),
        _user_fk("planner_tasks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planner_tasks")),
    )
    with op.batch_alter_table("planner_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_planner_tasks_user_id_created_at"), ["user_id", "created_at"], unique=False)

    op.create_table(
        "planner_sessions",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", _id(), nullable=True),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("default_key", sa.String(length=64), nullable=True),
        *_times("created_at"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["planner_tasks.id"], name=op.f("fk_planner_sessions_task_id_planner_tasks"), ondelete="CASCADE"
        ),
        _user_fk("planner_sessions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planner_sessions")),
        sa.UniqueConstraint("default_key", name=op.f("uq_planner_sessions_default_key")),
    )
    with op.batch_alter_table("planner_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_planner_sessions_task_id"), ["task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_planner_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "planner_steps",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("task_id", _id(), nullable=False),
        sa.Column("order_index", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("blocking_reason", sa.Text(), nullable=True),
        sa.Column("estimate_minutes", sa.Integer(), nullable=True),
        *_times("planned_start", "planned_end", nullable=True),
        *_times("created_at", "updated_at"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["planner_tasks.id"], name=op.f("fk_planner_steps_task_id_planner_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planner_steps")),
    )
    with op.batch_alter_table("planner_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_planner_steps_task_id_order_index"), ["task_id", "order_index"], unique=False)

    op.create_table(
        "planner_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("task_key", sa.String(length=64), nullable=False),
        sa.Column("session_id", _id(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        *_times("created_at"),
        *_times("finished_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["planner_sessions.id"],
            name=op.f("fk_planner_jobs_session_id_planner_sessions"),
            ondelete="CASCADE",
        ),
        _user_fk("planner_jobs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planner_jobs")),
    )
    with op.batch_alter_table("planner_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_planner_jobs_state_created_at"), ["state", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_planner_jobs_user_id_task_key"), ["user_id", "task_key"], unique=False)

    op.create_table(
        "planner_messages",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("session_id", _id(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("agent_name", sa.String(length=32), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        *_times("created_at"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["planner_sessions.id"],
            name=op.f("fk_planner_messages_session_id_planner_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planner_messages")),
    )
    with op.batch_alter_table("planner_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_planner_messages_session_id_created_at"), ["session_id", "created_at"], unique=False
        )

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trusted", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("trusted")
    with op.batch_alter_table("planner_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_planner_messages_session_id_created_at"))
    op.drop_table("planner_messages")
    with op.batch_alter_table("planner_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_planner_jobs_user_id_task_key"))
        batch_op.drop_index(batch_op.f("ix_planner_jobs_state_created_at"))
    op.drop_table("planner_jobs")
    with op.batch_alter_table("planner_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_planner_steps_task_id_order_index"))
    op.drop_table("planner_steps")
    with op.batch_alter_table("planner_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_planner_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_planner_sessions_task_id"))
    op.drop_table("planner_sessions")
    with op.batch_alter_table("planner_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_planner_tasks_user_id_created_at"))
    op.drop_table("planner_tasks")
    op.drop_table("planner_llm_settings")
