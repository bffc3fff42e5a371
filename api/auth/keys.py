"""Redis key names of the auth side (the revocation cache). Kept here until scheduler/keys.py takes them."""

from __future__ import annotations

__all__ = ("revoked_session_key", "revoked_token_key")


def revoked_token_key(prefix: str, jti: str) -> str:
    """STRING "1" with TTL = the token's remaining lifetime; a cache of the `revoked_tokens` table."""
    return f"{prefix}:auth:revoked:{jti}"


def revoked_session_key(prefix: str, session_id: str) -> str:
    """STRING "1" with TTL = an access token's lifetime: the session (refresh family) was revoked, so
    every access token carrying its `sid` is refused. A cache of `refresh_tokens.revoked_at`."""
    return f"{prefix}:auth:revoked-session:{session_id}"
