"""Request and response bodies of /api/auth (API-only, so not in protocol/). camelCase on the wire."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = (
    "LoginRequest",
    "LogoutRequest",
    "LogoutResponse",
    "MeView",
    "RefreshRequest",
    "RefreshResponse",
    "RegisterRequest",
    "RegisterResponse",
    "TokenResponse",
)

# Shape only (one @, a dot in the domain, no spaces); deliverability is not ours to judge.
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
# Lengths count characters; nothing is truncated before hashing.
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=128)]
LoginPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
OpaqueToken = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class _Body(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class RegisterRequest(_Body):
    email: Email
    password: Password
    name: Name


class RegisterResponse(_Body):
    user_id: str


class LoginRequest(_Body):
    email: Email
    password: LoginPassword


class TokenResponse(_Body):
    access_token: str
    expires_in: int
    """Seconds until the access token expires."""
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret


class RefreshRequest(_Body):
    refresh_token: OpaqueToken


class RefreshResponse(_Body):
    access_token: str
    expires_in: int
    refresh_token: str


class LogoutRequest(_Body):
    refresh_token: OpaqueToken | None = None


class LogoutResponse(_Body):
    pass


class MeView(_Body):
    id: str
    email: str
    name: str
    roles: list[str]
