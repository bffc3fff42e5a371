"""`webhooks` (one completion callback per user, with its signing secret) and `webhook_deliveries` (the log)."""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime
import uuid

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, IdColumn, UTCDateTime, utcnow

__all__ = ("TaskCallback", "Webhook", "WebhookDelivery")


class Webhook(Base):
    __tablename__ = "webhooks"

    user_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    """Called for every task of the user; None: only tasks with their own `callbackUrl` are called back."""
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    """The signing secret, encrypted with the API's secrets key (bound to the user)."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("task_id", "user_id"), Index(None, "user_id", "created_at"))

    id: Mapped[str] = mapped_column(IdColumn, primary_key=True, default=lambda: str(uuid.uuid4()))
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    """No foreign key: the log may outlive the task (retention purges both by age)."""
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    """pending | retrying | delivered | failed | refused | canceled."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TaskCallback(Base):
    """A task's own callback URL (`callbackUrl` at submission); it wins over the owner's webhook URL."""

    __tablename__ = "task_callbacks"

    task_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(String(2048))
