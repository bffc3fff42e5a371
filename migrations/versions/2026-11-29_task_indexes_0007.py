"""tasks: partial indexes, so a task's INSERT and last UPDATE write fewer index entries.

Each UPDATE that ends a task changes `status`, so it is never a HOT update and adds an entry to every index
of `tasks` the new row belongs in. The idempotency key (mostly NULL), the pinned and assigned agents (NULL
until set) and the finish time (NULL until the end) are indexed only where set, and `status` only where it
is not `done`, the status most rows end in: a keyless unpinned task that ends `done` writes 5 index entries
at its INSERT and 6 at its last UPDATE instead of 9 and 9. The queries on these columns imply the
predicates, so they use the same indexes. The unique idempotency index keeps its meaning: NULL keys never
conflicted.

Revision ID: 0007_task_indexes
Revises: 0006_holds
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_task_indexes"
down_revision: str | None = "0006_holds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL: tuple[tuple[str, list[str], str], ...] = (
    ("ix_tasks_status", ["status"], "status <> 'done'"),
    ("ix_tasks_agent_id", ["agent_id"], "agent_id IS NOT NULL"),
    ("ix_tasks_assigned_agent_id", ["assigned_agent_id"], "assigned_agent_id IS NOT NULL"),
    ("ix_tasks_finished_at", ["finished_at"], "finished_at IS NOT NULL"),
)
_KEY = "uq_tasks_owner_id_idempotency_key"


def upgrade() -> None:
    # Batch mode: SQLite drops a table's UNIQUE constraint only by copying the table (PostgreSQL alters it).
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint(_KEY, type_="unique")
    for name, _, _ in _PARTIAL:
        op.drop_index(name, table_name="tasks")
    where = sa.text("idempotency_key IS NOT NULL")
    op.create_index(
        _KEY, "tasks", ["owner_id", "idempotency_key"], unique=True, postgresql_where=where, sqlite_where=where
    )
    for name, columns, predicate in _PARTIAL:
        op.create_index(name, "tasks", columns, postgresql_where=sa.text(predicate), sqlite_where=sa.text(predicate))


def downgrade() -> None:
    for name, columns, _ in _PARTIAL:
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", columns)
    op.drop_index(_KEY, table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.create_unique_constraint(_KEY, ["owner_id", "idempotency_key"])
