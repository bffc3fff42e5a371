"""Redis key names of the auth side (the revocation cache). Kept here until scheduler/keys.py takes them."""

from __future__ import annotations

__all__ = ("USER_VERSION_TTL_S", "revoked_session_key", "revoked_token_key", "user_version_key")


def revoked_token_key(prefix: str, jti: str) -> str:
    """STRING "1" with TTL = the token's remaining lifetime; a cache of the `revoked_tokens` table."""
    return f"{prefix}:auth:revoked:{jti}"


def revoked_session_key(prefix: str, session_id: str) -> str:
    """STRING "1" with TTL = an access token's lifetime: the session (refresh family) was revoked, so
    every access token carrying its `sid` is refused. A cache of `refresh_tokens.revoked_at`."""
    return f"{prefix}:auth:revoked-session:{session_id}"


USER_VERSION_TTL_S = 86_400
"""How long a user's minimum token version stays in Redis: longer than any access token lives."""


def user_version_key(prefix: str, user_id: str) -> str:
    """STRING: the user's current `token_version` after a bump that must end their tokens at once (a user
    disabled); tokens carrying an older `ver` are refused on every replica, cached or not."""
    return f"{prefix}:auth:user-version:{user_id}"
