"""Who is calling: the authenticated user attached to a request (`request.user`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("ROLE_ADMIN", "ROLE_USER", "CurrentUser")

ROLE_ADMIN = "admin"
ROLE_USER = "user"


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: str
    email: str
    name: str
    role: str
    """'admin' or 'user', read from the database on every request (a demotion applies at once)."""
    jti: str
    """The access token's id (what logout revokes)."""
    token_exp: int
    """The access token's expiry, unix seconds."""
    session_id: str = ""
    """The refresh-token family the access token belongs to (`sid` claim)."""

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    @property
    def roles(self) -> list[str]:
        return [self.role]
