"""The `dead_letters` table: what a user did with a failed task (retried it as a new task, or discarded it).

A failed task with no row here is a live dead letter. The task row itself is never changed, so its
history stays what happened; a retry is a new task linked from here.
"""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, UTCDateTime, utcnow

__all__ = ("DeadLetter",)


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
