"""Refresh-token families and the durable access-token denylist (Redis only caches it)."""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import Base, IdColumn, UTCDateTime, utcnow

__all__ = ("RefreshToken", "RevokedToken")


class RefreshToken(Base):
    """One issued refresh token; rotation links it to its successor within the same family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(IdColumn, primary_key=True)
    """The token's jti."""
    user_id: Mapped[str] = mapped_column(IdColumn, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(IdColumn, index=True)
    """Shared by every token descended from one login; reuse revokes the whole family."""
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 hex of the opaque token; the token itself is never stored."""
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    family_expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """Absolute end of the family: rotation never extends it."""
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(IdColumn, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RevokedToken(Base):
    """An access token revoked before its exp (logout); rows past `expires_at` may be purged."""

    __tablename__ = "revoked_tokens"
    __table_args__ = (Index("ix_revoked_tokens_expires_at", "expires_at"),)

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(IdColumn)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
