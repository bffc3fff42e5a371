"""Register, login, refresh and logout: the auth use cases. Commits its own transactions.

Rate limits are checked before any password hashing, so a flood costs no argon2 work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from api import audit
from api.auth import refresh as refresh_tokens
from api.auth.identity import ROLE_USER
from api.auth.keys import revoked_session_key, revoked_token_key
from api.db.base import utcnow
from api.db.models.auth import RefreshToken, RevokedToken
from api.db.models.users import User
from api.errors import ConflictError, RateLimitedError, UnauthorizedError

if TYPE_CHECKING:
    import redis.asyncio
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.auth.cache import UserCache
    from api.auth.identity import CurrentUser
    from api.auth.passwords import PasswordService
    from api.auth.tokens import AccessTokenCodec
    from api.http.context import CallContext
    from api.ratelimit import RateLimiter
    from api.settings import ApiSettings

__all__ = ("AuthService", "Tokens", "create_user", "normalize_email")

# Past its exp a token is refused by its signature check anyway; the margin covers clock leeway.
_REVOKED_PURGE_MARGIN = dt.timedelta(minutes=5)

logger = logging.getLogger(__name__)

_INVALID_LOGIN = "invalid email or password"
_INVALID_REFRESH = "invalid refresh token"


def normalize_email(email: str) -> str:
    return unicodedata.normalize("NFKC", email).strip().lower()


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    expires_in: int
    refresh_token: str


async def create_user(
    session: AsyncSession, passwords: PasswordService, *, email: str, password: str, name: str, role: str = ROLE_USER
) -> User:
    """Insert a user (flushes, does not commit); `ConflictError` when the email is taken. Also used by the CLI."""
    email = normalize_email(email)
    taken = await session.execute(select(func.count()).select_from(User).where(User.email == email))
    if taken.scalar_one():
        raise ConflictError("email already registered", {"field": "email"})
    user = User(email=email, name=name, password_hash=await passwords.hash(password), role=role)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration won the unique index
        await session.rollback()
        raise ConflictError("email already registered", {"field": "email"}) from exc
    return user


class AuthService:
    def __init__(
        self,
        *,
        session: AsyncSession,
        settings: ApiSettings,
        passwords: PasswordService,
        tokens: AccessTokenCodec,
        limiter: RateLimiter,
        redis: redis.asyncio.Redis,
        control_channel: str,
        users: UserCache | None = None,
    ) -> None:
        self._session = session
        self._users = users
        self._settings = settings
        self._passwords = passwords
        self._tokens = tokens
        self._limiter = limiter
        self._redis = redis
        self._control_channel = control_channel

    async def register(self, ctx: CallContext, *, email: str, password: str, name: str) -> str:
        limits = self._settings.ratelimit
        decision = await self._limiter.hit(
            "register_ip", ctx.ip, limit=limits.register_per_ip, window_s=limits.register_window_s
        )
        if not decision.allowed:
            raise RateLimitedError(decision.retry_after_s)
        user = await create_user(self._session, self._passwords, email=email, password=password, name=name)
        self._audit_own_success(ctx, user.id, user.role, "register")
        await self._session.commit()
        return user.id

    def _audit_own_success(self, ctx: CallContext, user_id: str, role: str, action: str) -> None:
        """An audit row for a user acting on their own account (register, login, logout)."""
        audit.record(
            self._session,
            action=action,
            outcome="success",
            actor_id=user_id,
            actor_role=role,
            ip=ctx.ip,
            request_id=ctx.request_id,
            target_type="user",
            target_id=user_id,
        )

    async def _check_login_limits(self, ctx: CallContext, email: str) -> None:
        limits = self._settings.ratelimit
        per_ip = await self._limiter.hit(
            "login_ip", ctx.ip, limit=limits.login_attempts_per_ip, window_s=limits.login_attempts_window_s
        )
        if not per_ip.allowed:
            raise RateLimitedError(per_ip.retry_after_s)
        # Failure counts are only read here; a refused attempt with the right password still gets 429.
        per_pair = await self._limiter.peek(
            "login_fail", f"{email}\x00{ctx.ip}",
            limit=limits.login_failures_per_account_ip, window_s=limits.login_failures_window_s,
        )  # fmt: skip
        if not per_pair.allowed:
            raise RateLimitedError(per_pair.retry_after_s)
        per_account = await self._limiter.peek(
            "login_fail_account", email, limit=limits.login_failures_per_account, window_s=3600
        )
        if not per_account.allowed:
            raise RateLimitedError(per_account.retry_after_s)

    async def _audit_rate_limited(self, ctx: CallContext, email: str) -> None:
        """One audit row per (email, ip) per window, so a flood of refused logins cannot flood the table."""
        window_s = self._settings.ratelimit.login_failures_window_s
        first = await self._limiter.hit("login_limited_audit", f"{email}\x00{ctx.ip}", limit=1, window_s=window_s)
        if not first.allowed:
            return
        audit.record(
            self._session,
            action="login",
            outcome="rate_limited",
            ip=ctx.ip,
            request_id=ctx.request_id,
            details={"emailSha256": hashlib.sha256(email.encode()).hexdigest()[:16]},
        )
        await self._session.commit()

    async def _count_failure(self, ctx: CallContext, email: str) -> None:
        limits = self._settings.ratelimit
        await self._limiter.hit(
            "login_fail", f"{email}\x00{ctx.ip}",
            limit=limits.login_failures_per_account_ip, window_s=limits.login_failures_window_s,
        )  # fmt: skip
        await self._limiter.hit("login_fail_account", email, limit=limits.login_failures_per_account, window_s=3600)

    async def login(self, ctx: CallContext, *, email: str, password: str) -> Tokens:
        email = normalize_email(email)
        try:
            await self._check_login_limits(ctx, email)
        except RateLimitedError:
            await self._audit_rate_limited(ctx, email)
            raise
        user = (await self._session.execute(select(User).where(User.email == email))).scalar_one_or_none()
        if user is None:
            await self._passwords.verify_dummy(password)
            ok = False
        else:
            ok = await self._passwords.verify(user.password_hash, password)
        if not ok or user is None or not user.is_active:
            await self._count_failure(ctx, email)
            audit.record(
                self._session,
                action="login",
                outcome="failure",
                actor_id=user.id if user else None,
                ip=ctx.ip,
                request_id=ctx.request_id,
                target_type="user",
                target_id=user.id if user else None,
                details={"reason": "bad_credentials" if ok is False else "inactive"},
            )
            await self._session.commit()
            raise UnauthorizedError(_INVALID_LOGIN)
        if self._passwords.needs_rehash(user.password_hash):
            user.password_hash = await self._passwords.hash(password)
        family_expires_at = utcnow() + dt.timedelta(seconds=self._settings.auth.refresh_token_ttl_s)
        refresh = refresh_tokens.issue(
            self._session, user_id=user.id, family_id=None, family_expires_at=family_expires_at
        )
        access = self._tokens.issue(
            user_id=user.id, role=user.role, token_version=user.token_version, session_id=refresh.family_id
        )
        self._audit_own_success(ctx, user.id, user.role, "login")
        await self._session.commit()
        await self._limiter.reset("login_fail", f"{email}\x00{ctx.ip}")
        return Tokens(access.token, access.expires_in, refresh.token)

    async def refresh(self, ctx: CallContext, token: str) -> Tokens:
        result = await refresh_tokens.rotate(self._session, token)
        if result.outcome is refresh_tokens.RotateOutcome.REUSED:
            audit.record(
                self._session,
                action="refresh_token_reuse",
                outcome="denied",
                actor_id=result.user_id,
                ip=ctx.ip,
                request_id=ctx.request_id,
                target_type="refresh_family",
                target_id=result.family_id,
            )
            await self._session.commit()
            logger.warning("refresh token reuse; family revoked family_id=%s", result.family_id)
            if result.family_id is not None:
                await self._announce_revocation(None, [result.family_id])
            raise UnauthorizedError(_INVALID_REFRESH)
        if result.outcome is not refresh_tokens.RotateOutcome.OK or result.user_id is None:
            await self._session.rollback()
            raise UnauthorizedError(_INVALID_REFRESH)
        user = await self._session.get(User, result.user_id)
        if user is None or not user.is_active or result.family_id is None or result.old_jti is None:
            await self._session.rollback()
            raise UnauthorizedError(_INVALID_REFRESH)
        family_expires_at = await refresh_tokens.family_expiry(self._session, result.family_id)
        if family_expires_at is None:
            await self._session.rollback()
            raise UnauthorizedError(_INVALID_REFRESH)
        new = refresh_tokens.issue(
            self._session, user_id=user.id, family_id=result.family_id, family_expires_at=family_expires_at
        )
        await self._session.execute(
            update(RefreshToken).where(RefreshToken.id == result.old_jti).values(replaced_by=new.jti)
        )
        access = self._tokens.issue(
            user_id=user.id, role=user.role, token_version=user.token_version, session_id=result.family_id
        )
        await self._session.commit()
        return Tokens(access.token, access.expires_in, new.token)

    async def logout(self, ctx: CallContext, user: CurrentUser, refresh_token: str | None) -> None:
        """Revoke the access token (durably, then in the cache), its session's refresh family, and tell replicas."""
        expires_at = dt.datetime.fromtimestamp(user.token_exp, dt.UTC)
        # The denylist only needs rows until their token expires: each logout sweeps the expired ones
        # (indexed on expires_at), so the table stays as small as the tokens still alive.
        await self._session.execute(
            delete(RevokedToken).where(RevokedToken.expires_at < utcnow() - _REVOKED_PURGE_MARGIN)
        )
        exists = await self._session.get(RevokedToken, user.jti)
        if exists is None:
            self._session.add(RevokedToken(jti=user.jti, user_id=user.id, expires_at=expires_at))
        families = {user.session_id} if user.session_id else set()
        if refresh_token:
            found = await refresh_tokens.find_family(self._session, refresh_token)
            if found is not None and found[0] == user.id:
                families.add(found[1])
        for family_id in families:
            await refresh_tokens.revoke_family(self._session, family_id)
        self._audit_own_success(ctx, user.id, user.role, "logout")
        try:
            await self._session.commit()
        except IntegrityError:  # a concurrent logout of the same token inserted the row first
            await self._session.rollback()
        await self._announce_revocation((user.jti, user.token_exp), sorted(families))

    async def _announce_revocation(self, token: tuple[str, int] | None, sessions: list[str]) -> None:
        """Put the revocation of a token (`(jti, exp)`) and of sessions in Redis, which every replica checks
        on every request, and tell other replicas (closes WebSockets). Best effort: the database rows rule,
        and replicas' caches re-read them within `auth.user_cache_ttl_s`."""
        auth, prefix = self._settings.auth, self._settings.redis.prefix
        if token is not None and self._users is not None:
            self._users.forget(token[0])
        if sessions and self._users is not None:
            self._users.clear_checks()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if token is not None:
                    jti, exp = token
                    ttl_s = max(1, exp - int(time.time()) + auth.jwt_leeway_s)
                    pipe.set(revoked_token_key(prefix, jti), "1", ex=ttl_s)
                    pipe.publish(self._control_channel, json.dumps({"kind": "token_revoked", "id": jti}))
                for family_id in sessions:
                    # Any access token of the session is younger than its lifetime: the key outlives them all.
                    pipe.set(
                        revoked_session_key(prefix, family_id), "1", ex=auth.access_token_ttl_s + auth.jwt_leeway_s
                    )
                await pipe.execute()
        except RedisError:
            logger.warning("could not cache or announce a revocation; the database still refuses it")
