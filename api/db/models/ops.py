"""`dead_letters`: what a user did with a failed task (retried it as a new task, or discarded it).
`operator_holds`: the pauses and drains an admin set, so they outlive a Redis that lost them.

A failed task with no row here is a live dead letter. The task row itself is never changed, so its
history stays what happened; a retry is a new task linked from here.
"""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, UTCDateTime, utcnow

__all__ = ("DeadLetter", "OperatorHold")


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (Index(None, "retry_task_id"),)

    task_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))
    """retried | discarded."""
    retry_task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    """The new task a retry submitted (no foreign key: retention may delete either one first)."""
    actor_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OperatorHold(Base):
    """One pause or drain. The scheduler reads the Redis sets; these rows refill them after Redis loss."""

    __tablename__ = "operator_holds"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    """type | route | agent."""
    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    """A task type (up to 128), a route id or an agent id."""
    actor_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
