"""The append-only `audit_log` table: who did what, from where, with which outcome."""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime
from typing import Any

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import Base, IdColumn, JsonColumn, UTCDateTime, utcnow

__all__ = ("AuditLog",)


class AuditLog(Base):
    __tablename__ = "audit_log"

    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER primary key.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[str | None] = mapped_column(IdColumn, nullable=True)
    actor_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    """e.g. register, login, logout, refresh_token_reuse."""
    outcome: Mapped[str] = mapped_column(String(16))
    """success | failure | denied."""
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    target_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JsonColumn, default=dict)
