"""Route guards: `requires_user` authenticates the bearer token and sets `request.user`; `requires_admin` adds the role;
`requires_token` only verifies the token and leaves the rest of the check to the handler.

Guards (not a middleware) so unguarded routes (login, health) never parse credentials, and every
failure goes through the one error handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.auth.identity import CurrentUser
from api.auth.tokens import AccessClaims, authenticate_access_token
from api.errors import ForbiddenError, UnauthorizedError

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

__all__ = (
    "CLAIMS_SCOPE_KEY",
    "bearer_token",
    "claims_of",
    "optional_user",
    "requires_admin",
    "requires_token",
    "requires_user",
)


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when the header is absent."""
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError()
    return token.strip()


async def optional_user(connection: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser | None:
    """The caller if a bearer token is present (refused if bad); None for anonymous calls."""
    existing = connection.scope.get("user")
    if isinstance(existing, CurrentUser):
        return existing
    token = bearer_token(connection)
    if token is None:
        return None
    user = await authenticate_access_token(connection.app.state, token)
    connection.scope["user"] = user
    return user


async def requires_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if await optional_user(connection) is None:
        raise UnauthorizedError()


CLAIMS_SCOPE_KEY = "taskyard.claims"
"""Where `requires_token` leaves the verified claims for the handler that finishes the check."""


async def requires_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A signed, unexpired access token; the handler finishes the check (`claims_of` then
    `authenticate_counting`), so a route that counts a rate limit checks revocation in the same round trip."""
    token = bearer_token(connection)
    if token is None:
        raise UnauthorizedError()
    connection.scope[CLAIMS_SCOPE_KEY] = connection.app.state.auth.tokens.decode(token)  # type: ignore[literal-required]


def claims_of(connection: ASGIConnection[Any, Any, Any, Any]) -> AccessClaims:
    """The claims `requires_token` verified (signature and expiry only: not yet revocation or the user)."""
    claims = connection.scope.get(CLAIMS_SCOPE_KEY)
    if not isinstance(claims, AccessClaims):
        raise UnauthorizedError()
    return claims


async def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    await requires_user(connection, handler)
    user = connection.scope["user"]
    if not isinstance(user, CurrentUser) or not user.is_admin:
        raise ForbiddenError("admin role required")
