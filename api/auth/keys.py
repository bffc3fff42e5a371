"""Redis key names of the auth side (the revocation cache). Kept here until scheduler/keys.py takes them."""

from __future__ import annotations

__all__ = ("revoked_token_key",)


def revoked_token_key(prefix: str, jti: str) -> str:
    """STRING "1" with TTL = the token's remaining lifetime; a cache of the `revoked_tokens` table."""
    return f"{prefix}:auth:revoked:{jti}"
