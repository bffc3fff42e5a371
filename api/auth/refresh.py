"""Refresh-token families in the database: issue, rotate (exactly once per token), revoke.

Tokens are opaque (256 random bits); only their sha256 is stored. A token presented a second time
means it leaked or raced: the whole family is revoked (RFC 9700 §4.14.2), so of two concurrent
refreshes exactly one succeeds and the family then ends.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from api.db.base import utcnow
from api.db.models.auth import RefreshToken

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ("IssuedRefreshToken", "RotateOutcome", "RotateResult", "hash_token", "issue", "revoke_family", "rotate")

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedRefreshToken:
    token: str
    jti: str
    family_id: str


class RotateOutcome(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    """No such token, expired, or revoked."""
    REUSED = "reused"
    """Already used: the family has just been revoked."""


@dataclass(frozen=True, slots=True)
class RotateResult:
    outcome: RotateOutcome
    user_id: str | None = None
    family_id: str | None = None
    old_jti: str | None = None


def issue(
    session: AsyncSession, *, user_id: str, family_id: str | None, family_expires_at: dt.datetime
) -> IssuedRefreshToken:
    """Add a new token row to the session (a new family when `family_id` is None)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    jti = str(uuid.uuid4())
    family = family_id or str(uuid.uuid4())
    session.add(
        RefreshToken(
            id=jti,
            user_id=user_id,
            family_id=family,
            token_hash=hash_token(token),
            expires_at=family_expires_at,
            family_expires_at=family_expires_at,
            created_at=utcnow(),
        )
    )
    return IssuedRefreshToken(token=token, jti=jti, family_id=family)


async def rotate(session: AsyncSession, token: str) -> RotateResult:
    """Mark the token used, if and only if nobody did before (a conditional UPDATE decides races).

    The UPDATE is the transaction's first statement, so on SQLite it takes the write lock before
    reading (no stale-snapshot upgrade failure under concurrency).
    """
    digest = hash_token(token)
    now = utcnow()
    claimed = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == digest,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.family_expires_at > now,
        )
        .values(used_at=now)
        .returning(RefreshToken.id, RefreshToken.user_id, RefreshToken.family_id, RefreshToken.family_expires_at)
    )
    row = claimed.first()
    if row is not None:
        return RotateResult(RotateOutcome.OK, user_id=row.user_id, family_id=row.family_id, old_jti=row.id)
    existing = (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == digest))
    ).scalar_one_or_none()
    if existing is None or existing.used_at is None:
        return RotateResult(RotateOutcome.UNKNOWN)
    await revoke_family(session, existing.family_id)
    return RotateResult(
        RotateOutcome.REUSED, user_id=existing.user_id, family_id=existing.family_id, old_jti=existing.id
    )


async def family_expiry(session: AsyncSession, family_id: str) -> dt.datetime | None:
    stmt = select(RefreshToken.family_expires_at).where(RefreshToken.family_id == family_id).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def revoke_family(session: AsyncSession, family_id: str) -> int:
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def find_family(session: AsyncSession, token: str) -> tuple[str, str] | None:
    """(user_id, family_id) of a refresh token, whatever its state."""
    stmt = select(RefreshToken.user_id, RefreshToken.family_id).where(RefreshToken.token_hash == hash_token(token))
    row = (await session.execute(stmt)).first()
    return (row.user_id, row.family_id) if row else None
