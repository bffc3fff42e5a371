"""A partial index on tasks that are `done` without their result, for the reconciler's repair pass.

Revision ID: 0004_done_without_result
Revises: 0003_planner
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_done_without_result"
down_revision: str | None = "0003_planner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = sa.text("status = 'done' AND result IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_tasks_done_without_result", "tasks", ["finished_at"], postgresql_where=_WHERE, sqlite_where=_WHERE
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_done_without_result", table_name="tasks")
