"""The `agents` table: registered agent identities and their write-only token hashes.

Presence (online, load) lives in Redis, never here.
"""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - SQLAlchemy resolves Mapped[] at runtime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from api.db.base import ID_LENGTH, Base, IdColumn, JsonColumn, UTCDateTime, utcnow

__all__ = ("TOKEN_HASH_LENGTH", "Agent")

TOKEN_HASH_LENGTH = 64
"""Hex sha256 of the agent token."""


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (Index(None, "owner_id"), Index(None, "is_public"))

    id: Mapped[str] = mapped_column(IdColumn, primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(128))
    capabilities: Mapped[list[str]] = mapped_column(JsonColumn)
    concurrency: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list[str]] = mapped_column(JsonColumn)
    meta: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Set by an admin for our own LLM workers: only they get a task owner's sealed LLM credentials."""
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH))
    token_rotated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
