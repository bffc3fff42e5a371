"""Operations: `operator_holds`, the pauses and drains an admin set, kept to refill Redis after it lost them.

Revision ID: 0006_holds
Revises: 0005_operations
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import api.db.base

revision: str = "0006_holds"
down_revision: str | None = "0005_operations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operator_holds",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("actor_id", sa.String(length=36), nullable=True),
        sa.Column("at", api.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_operator_holds")),
    )


def downgrade() -> None:
    op.drop_table("operator_holds")
