"""/api/auth routes: parse, call one service method, shape the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves DI hints at runtime

from api.auth.guards import optional_user, requires_user
from api.auth.identity import CurrentUser
from api.auth.schemas import (
    LoginRequest,
    LogoutRequest,
    LogoutResponse,
    MeView,
    RefreshRequest,
    RefreshResponse,
    RegisterRequest,
    RegisterResponse,
    TokenResponse,
)
from api.auth.services import AuthService
from api.errors import ForbiddenError, UnauthorizedError
from api.http import call_context

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ("AuthController", "provide_auth_service")


async def provide_auth_service(state: State, db_session: AsyncSession) -> AuthService:
    return AuthService(
        session=db_session,
        settings=state.settings,
        passwords=state.auth.passwords,
        tokens=state.auth.tokens,
        limiter=state.auth.limiter,
        redis=state.redis,
        control_channel=state.auth.control_channel,
        users=state.auth.users,
    )


def _current(request: Request[Any, Any, Any]) -> CurrentUser:
    user = request.scope.get("user")
    if not isinstance(user, CurrentUser):
        raise UnauthorizedError()
    return user


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]
    dependencies = {"auth_service": Provide(provide_auth_service)}

    @post("/register", status_code=HTTP_201_CREATED, summary="Create an account (dev: anyone; prod: admins)")
    async def register(
        self, request: Request[Any, Any, Any], data: RegisterRequest, auth_service: AuthService
    ) -> RegisterResponse:
        settings = request.app.state.settings
        if not settings.open_registration:
            caller = await optional_user(request)
            if caller is None or not caller.is_admin:
                raise ForbiddenError("registration is restricted to admins")
        ctx = call_context(request)
        user_id = await auth_service.register(ctx, email=data.email, password=data.password, name=data.name)
        return RegisterResponse(user_id=user_id)

    @post("/login", status_code=HTTP_200_OK, summary="Exchange email and password for tokens")
    async def login(
        self, request: Request[Any, Any, Any], data: LoginRequest, auth_service: AuthService
    ) -> TokenResponse:
        tokens = await auth_service.login(call_context(request), email=data.email, password=data.password)
        return TokenResponse(
            access_token=tokens.access_token, expires_in=tokens.expires_in, refresh_token=tokens.refresh_token
        )

    @post("/refresh", status_code=HTTP_200_OK, summary="Rotate a refresh token")
    async def refresh(
        self, request: Request[Any, Any, Any], data: RefreshRequest, auth_service: AuthService
    ) -> RefreshResponse:
        tokens = await auth_service.refresh(call_context(request), data.refresh_token)
        return RefreshResponse(
            access_token=tokens.access_token, expires_in=tokens.expires_in, refresh_token=tokens.refresh_token
        )

    @post("/logout", status_code=HTTP_200_OK, guards=[requires_user], summary="Revoke this session")
    async def logout(
        self, request: Request[Any, Any, Any], auth_service: AuthService, data: LogoutRequest | None = None
    ) -> LogoutResponse:
        await auth_service.logout(call_context(request), _current(request), data.refresh_token if data else None)
        return LogoutResponse()

    @get("/me", guards=[requires_user], summary="The caller's account")
    async def me(self, request: Request[Any, Any, Any]) -> MeView:
        user = _current(request)
        return MeView(id=user.id, email=user.email, name=user.name, roles=user.roles)
