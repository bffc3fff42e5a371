"""Operations: `dead_letters`, `schedules`, `schedule_runs`, `webhooks`, `webhook_deliveries`, `task_callbacks`; tasks by finish time.

Revision ID: 0005_operations
Revises: 0003_planner
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import api.db.base


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0005_operations"
down_revision: str | None = "0003_planner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("retry_task_id", sa.String(length=36), nullable=True),
        sa.Column("actor_id", sa.String(length=36), nullable=True),
        sa.Column("at", api.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_dead_letters_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_retry_task_id"), "dead_letters", ["retry_task_id"], unique=False)
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=True),
        sa.Column("template", _json(), nullable=False),
        sa.Column("misfire_policy", sa.String(length=16), nullable=False),
        sa.Column("overlap_policy", sa.String(length=16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("anchor_at", api.db.base.UTCDateTime(), nullable=False),
        sa.Column("next_fire_at", api.db.base.UTCDateTime(), nullable=True),
        sa.Column("last_fire_at", api.db.base.UTCDateTime(), nullable=True),
        sa.Column("last_task_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", api.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", api.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_schedules_owner_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index(op.f("ix_schedules_owner_id_created_at"), "schedules", ["owner_id", "created_at"], unique=False)
    op.create_index(op.f("ix_schedules_paused_next_fire_at"), "schedules", ["paused", "next_fire_at"], unique=False)
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("schedule_id", sa.String(length=36), nullable=False),
        sa.Column("fire_at", api.db.base.UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("at", api.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.id"], name=op.f("fk_schedule_runs_schedule_id_schedules"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint("schedule_id", "fire_at", name=op.f("uq_schedule_runs_schedule_id_fire_at")),
    )
    op.create_table(
        "webhooks",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("secret_enc", sa.LargeBinary(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", api.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", api.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_webhooks_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_webhooks")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", api.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", api.db.base.UTCDateTime(), nullable=False),
        sa.Column("delivered_at", api.db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_webhook_deliveries_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("task_id", "user_id", name=op.f("uq_webhook_deliveries_task_id_user_id")),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_user_id_created_at"), "webhook_deliveries", ["user_id", "created_at"], unique=False
    )
    op.create_table(
        "task_callbacks",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_callbacks_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_callbacks")),
    )
    # Retention finds old finished tasks by finish time; without this it scans the table.
    op.create_index(op.f("ix_tasks_finished_at"), "tasks", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_table("task_callbacks")
    op.drop_index(op.f("ix_webhook_deliveries_user_id_created_at"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_table("schedule_runs")
    op.drop_index(op.f("ix_schedules_paused_next_fire_at"), table_name="schedules")
    op.drop_index(op.f("ix_schedules_owner_id_created_at"), table_name="schedules")
    op.drop_table("schedules")
    op.drop_index(op.f("ix_tasks_finished_at"), table_name="tasks")
    op.drop_index(op.f("ix_dead_letters_retry_task_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
