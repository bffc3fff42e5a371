"""Operations: `dead_letters` (what was done with a failed task: retried as a new task, or discarded).

Revision ID: 0005_operations
Revises: 0003_planner
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db.base

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
    # Retention finds old finished tasks by finish time; without this it scans the table.
    op.create_index(op.f("ix_tasks_finished_at"), "tasks", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tasks_finished_at"), table_name="tasks")
    op.drop_index(op.f("ix_dead_letters_retry_task_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
