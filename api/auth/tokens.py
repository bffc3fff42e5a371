"""Access tokens (JWT, HS256 pinned) and the check behind every authenticated request and WS handshake.

Any failure is one `UnauthorizedError` with a generic message; the reason goes to the server log only.
Checks, in order: size, signature/alg/claims (pyjwt), type, revocation of the token or of its session's
refresh family (Redis, on every request), then the database: the user row (exists, active, token
version unchanged) and the revocation tables, served from a per-process cache with a bounded
staleness (api/auth/cache.py), so an emptied Redis revives a revoked token for at most that bound.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from redis.exceptions import RedisError
from sqlalchemy import select

from api.auth.cache import UserCache
from api.auth.identity import CurrentUser
from api.auth.keys import revoked_session_key, revoked_token_key, user_version_key
from api.db.models.auth import RefreshToken, RevokedToken
from api.db.models.users import User
from api.errors import ServiceUnavailableError, UnauthorizedError
from api.ratelimit import RateGuard

if TYPE_CHECKING:
    import redis.asyncio
    from litestar.datastructures import State
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.ratelimit import RateDecision, RateLimiter
    from api.settings import AuthSettings

__all__ = (
    "ACCESS_TOKEN_TYPE",
    "MAX_TOKEN_LENGTH",
    "AccessClaims",
    "AccessTokenCodec",
    "RateHit",
    "UserCache",
    "authenticate_access_token",
    "authenticate_claims",
    "authenticate_counting",
)

logger = logging.getLogger(__name__)

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - the typ claim value
ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096
"""Longer bearer values are refused before any parsing."""
_MAX_VERIFIED = 10_000
"""Verified tokens kept per process (`AccessTokenCodec.decode`); about 1 KiB each."""
_REQUIRED_CLAIMS = ("exp", "iat", "nbf", "jti", "aud", "iss", "sub", "typ", "roles")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    jti: str
    exp: int
    roles: tuple[str, ...]
    token_version: int
    session_id: str


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    jti: str
    expires_in: int
    exp: int


class AccessTokenCodec:
    def __init__(self, settings: AuthSettings) -> None:
        self._key = settings.jwt_secret.reveal()
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._ttl_s = settings.access_token_ttl_s
        self._leeway_s = settings.jwt_leeway_s
        self._verified: dict[str, AccessClaims] = {}
        """Tokens whose signature and claims passed, so a client's next request skips the HMAC and parse."""

    def issue(self, *, user_id: str, role: str, token_version: int, session_id: str) -> IssuedAccessToken:
        now = int(time.time())
        jti = uuid.uuid4().hex
        exp = now + self._ttl_s
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": jti,
            "typ": ACCESS_TOKEN_TYPE,
            "roles": [role],
            "ver": token_version,
            "sid": session_id,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": "JWT"})
        return IssuedAccessToken(token=token, jti=jti, expires_in=self._ttl_s, exp=exp)

    def decode(self, token: str) -> AccessClaims:
        """Verify and parse; raises `UnauthorizedError` on any problem (reason logged, not returned)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise _refuse("empty or oversized token")
        known = self._verified.get(token)
        if known is not None:
            # Only expiry can change for a token that verified once (nbf and iat were already past).
            if known.exp + self._leeway_s > time.time():
                return known
            del self._verified[token]
        claims = self._verify(token)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()  # rare: a fresh start costs one HMAC per live token
        self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": list(_REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.PyJWTError as exc:
            raise _refuse(f"jwt: {type(exc).__name__}") from exc
        try:
            return _parse_claims(claims, now=int(time.time()), leeway_s=self._leeway_s)
        except (KeyError, TypeError, ValueError) as exc:
            raise _refuse(f"claims: {exc}") from exc


def _parse_claims(claims: dict[str, Any], *, now: int, leeway_s: int) -> AccessClaims:
    if claims["typ"] != ACCESS_TOKEN_TYPE:
        raise ValueError("not an access token")
    if int(claims["iat"]) > now + leeway_s:
        raise ValueError("iat in the future")
    roles = claims["roles"]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TypeError("roles must be a list of strings")
    sub, jti = claims["sub"], claims["jti"]
    if not isinstance(sub, str) or not isinstance(jti, str) or not sub or not jti:
        raise TypeError("sub and jti must be strings")
    version = claims.get("ver", 0)
    if not isinstance(version, int):
        raise TypeError("ver must be an integer")
    sid = claims.get("sid", "")
    return AccessClaims(
        user_id=sub,
        jti=jti,
        exp=int(claims["exp"]),
        roles=tuple(roles),
        token_version=version,
        session_id=sid if isinstance(sid, str) else "",
    )


def _refuse(reason: str) -> UnauthorizedError:
    logger.info("access token refused: %s", reason)
    return UnauthorizedError()


async def _revoked_in_redis(redis: redis.asyncio.Redis | None, prefix: str, claims: AccessClaims) -> bool | None:
    """True when Redis holds a revocation of the token, of its session, or of its user's token version;
    None when Redis is unavailable (one round trip)."""
    if redis is None:
        return None
    keys = [user_version_key(prefix, claims.user_id), revoked_token_key(prefix, claims.jti)]
    if claims.session_id:
        keys.append(revoked_session_key(prefix, claims.session_id))
    try:
        # One MGET, not a pipeline: every key is a string and a revocation's mere presence is what counts.
        min_version, *revocations = await redis.mget(keys)
        return any(r is not None for r in revocations) or (
            min_version is not None and claims.token_version < int(min_version)
        )
    except RedisError:
        # The database below is the source of truth; a Redis outage only loses the fast path.
        logger.warning("revocation cache unavailable; checking the database")
        return None


async def load_current_user(session: AsyncSession, claims: AccessClaims) -> CurrentUser:
    """The user behind valid claims: refused when revoked, missing, inactive or re-versioned."""
    revoked_jti = select(RevokedToken.jti).where(RevokedToken.jti == claims.jti).exists()
    # Logout and refresh-token reuse revoke the session's family; its access tokens end with it.
    revoked_session = (
        select(RefreshToken.id)
        .where(RefreshToken.family_id == claims.session_id, RefreshToken.revoked_at.is_not(None))
        .exists()
    )
    stmt = select(User, revoked_jti, revoked_session).where(User.id == claims.user_id)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise _refuse("user not found")
    user, jti_revoked, session_revoked = row
    if jti_revoked:
        raise _refuse("token revoked")
    if session_revoked:
        raise _refuse("session revoked")
    if not user.is_active:
        raise _refuse("user inactive")
    if user.token_version != claims.token_version:
        raise _refuse("token version changed")
    return CurrentUser(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        jti=claims.jti,
        token_exp=claims.exp,
        session_id=claims.session_id,
    )


def _cached_user(state: State, claims: AccessClaims) -> CurrentUser | None:
    cache: UserCache | None = getattr(state.auth, "users", None)
    return None if cache is None else cache.get(claims.jti)


async def _user_from_database(state: State, claims: AccessClaims) -> CurrentUser:
    """The database check, cached; concurrent misses of one token share it (`UserCache.load_once`)."""
    cache: UserCache | None = getattr(state.auth, "users", None)
    if cache is None:
        return await _load_user(state, claims)
    return await cache.load_once(claims.jti, functools.partial(_load_user, state, claims))


async def _load_user(state: State, claims: AccessClaims) -> CurrentUser:
    maker: async_sessionmaker[AsyncSession] = state.db
    async with maker() as session:
        return await load_current_user(session, claims)


async def authenticate_access_token(state: State, token: str) -> CurrentUser:
    """The full check of a bearer access token (REST guards and the WS handshake).

    Revocations in Redis are checked on every call. The database check runs on a cache miss; a token
    that passed it is served from the process' cache for `auth.user_cache_ttl_s` (see api/auth/cache.py),
    and never while Redis is unavailable (then the database decides every time).
    """
    codec: AccessTokenCodec = state.auth.tokens
    return await authenticate_claims(state, codec.decode(token))


async def authenticate_claims(state: State, claims: AccessClaims) -> CurrentUser:
    """`authenticate_access_token` after the token's signature and claims were verified."""
    prefix: str = state.settings.redis.prefix
    revoked = await _revoked_in_redis(state.redis, prefix, claims)
    if revoked:
        raise _refuse("token or session revoked (cache)")
    if revoked is not None and (cached := _cached_user(state, claims)) is not None:
        return cached
    return await _user_from_database(state, claims)


@dataclass(frozen=True, slots=True)
class RateHit:
    """One hit of the caller's own rate limit (subject: the user id), counted with the token check."""

    limiter: RateLimiter
    bucket: str
    limit: int
    window_s: float


async def authenticate_counting(state: State, claims: AccessClaims, hit: RateHit) -> tuple[CurrentUser, RateDecision]:
    """`authenticate_access_token` for verified claims, with one hit of `hit` counted in the same Redis
    round trip as the revocation check (one script): a revoked token is refused and not counted.

    With `auth.revocation_check_interval_s` above 0, a token that passed that check less than the
    interval ago skips the round trip: its hit comes from the rate limit's lease in this process
    (api/ratelimit.py), and a revocation reaches it within the interval. Every script call takes a lease.

    Redis down: the database alone decides the token (a revoked one is still a 401), then the rate
    limit fails closed (`ServiceUnavailableError`, a 503). The caller decides on the `RateDecision`.
    """
    interval: float = state.settings.auth.revocation_check_interval_s
    users: UserCache | None = getattr(state.auth, "users", None)
    if users is not None and users.checked(claims.jti):
        local = hit.limiter.take_local(hit.bucket, claims.user_id)
        if local is not None:
            return users.get(claims.jti) or await _user_from_database(state, claims), local
    prefix: str = state.settings.redis.prefix
    revocations = [revoked_token_key(prefix, claims.jti)]
    if claims.session_id:
        revocations.append(revoked_session_key(prefix, claims.session_id))
    guard = RateGuard(user_version_key(prefix, claims.user_id), claims.token_version, tuple(revocations))
    leased = interval > 0 and users is not None
    try:
        decision = await hit.limiter.hit_guarded(
            hit.bucket, claims.user_id, guard, limit=hit.limit, window_s=hit.window_s, lease=leased
        )
    except ServiceUnavailableError:
        await _user_from_database(state, claims)
        raise
    if decision is None:
        raise _refuse("token or session revoked (cache)")
    if users is not None:
        users.mark_checked(claims.jti, interval)
    user = _cached_user(state, claims) or await _user_from_database(state, claims)
    return user, decision
