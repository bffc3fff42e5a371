"""tasks.history: a task's status changes kept compactly on its own row (no task_events row per change).

Revision ID: 0004_history
Revises: 0003_planner
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_history"
down_revision: str | None = "0003_planner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows written before this revision keep their history in task_events, which readers
    # still merge in, so no backfill is needed.
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("history", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("history")
