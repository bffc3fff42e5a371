"""Audit rows for security-relevant operations; the caller's transaction commits them.

Never put secrets (passwords, tokens) in `details`; log sizes or ids instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.db.models.audit import AuditLog

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ("record",)


def record(
    session: AsyncSession,
    *,
    action: str,
    outcome: str,
    actor_id: str | None = None,
    actor_role: str | None = None,
    ip: str | None = None,
    request_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """Add one audit row to `session` (not flushed, not committed)."""
    row = AuditLog(
        action=action,
        outcome=outcome,
        actor_id=actor_id,
        actor_role=actor_role,
        ip=ip,
        request_id=request_id,
        target_type=target_type,
        target_id=target_id,
        details=details or {},
    )
    session.add(row)
    return row
