"""AuthService with a counting password hasher: the same argon2 work for unknown and known emails,
and none at all once the rate limit refuses (counted before hashing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.auth.passwords import PasswordService
from api.auth.services import AuthService, create_user
from api.auth.tokens import AccessTokenCodec
from api.errors import RateLimitedError, UnauthorizedError
from api.http.context import CallContext
from api.ratelimit import RateLimiter
from scheduler.keys import Keys
from tests.integration.api.test_auth_flow import CHEAP_ARGON2, PASSWORD, unique_email


class CountingPasswords(PasswordService):
    """The real hasher, counting verifications (both real and dummy go through `verify`)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost_kib=8, parallelism=1, concurrency=2)
        self.verifications = 0

    async def verify(self, stored_hash: str, password: str) -> bool:
        self.verifications += 1
        return await super().verify(stored_hash, password)


def make_service(
    settings: Any, passwords: PasswordService, client: redis.asyncio.Redis, session: AsyncSession
) -> AuthService:
    return AuthService(
        session=session,
        settings=settings,
        passwords=passwords,
        tokens=AccessTokenCodec(settings.auth),
        limiter=RateLimiter(client, settings.redis.prefix),
        redis=client,
        control_channel=Keys(settings.redis.prefix).control_channel(),
    )


@pytest.fixture
async def service_parts(
    make_settings: Callable[..., Any], redis_url: str
) -> AsyncIterator[tuple[Any, async_sessionmaker[AsyncSession], redis.asyncio.Redis]]:
    settings = make_settings(**CHEAP_ARGON2, TASKYARD_API_LOGIN_FAILURES_PER_ACCOUNT_IP=2)
    engine = create_async_engine(settings.database.url.reveal())
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5)
    try:
        yield settings, async_sessionmaker(engine, expire_on_commit=False), client
    finally:
        await client.aclose()
        await engine.dispose()


async def test_unknown_email_costs_one_verification_and_a_lock_costs_none(
    service_parts: tuple[Any, async_sessionmaker[AsyncSession], redis.asyncio.Redis],
) -> None:
    settings, maker, client = service_parts
    passwords = CountingPasswords()
    email = unique_email()
    async with maker() as session:
        await create_user(session, passwords, email=email, password=PASSWORD, name="x")
        await session.commit()

    def service(session: AsyncSession) -> AuthService:
        return make_service(settings, passwords, client, session)

    ctx = CallContext(ip="192.0.2.7", request_id="t-1")
    async with maker() as session:
        with pytest.raises(UnauthorizedError):
            await service(session).login(ctx, email=unique_email(), password="whatever-pass")
    assert passwords.verifications == 1
    async with maker() as session:
        with pytest.raises(UnauthorizedError):
            await service(session).login(ctx, email=email, password="wrong password")
    assert passwords.verifications == 2

    async with maker() as session:
        with pytest.raises(UnauthorizedError):
            await service(session).login(ctx, email=email, password="wrong again")
    async with maker() as session:
        with pytest.raises(RateLimitedError):
            await service(session).login(ctx, email=email, password=PASSWORD)
    assert passwords.verifications == 3  # the refused attempt did no argon2 work


async def test_long_passwords_are_not_truncated(
    service_parts: tuple[Any, async_sessionmaker[AsyncSession], redis.asyncio.Redis],
) -> None:
    settings, maker, client = service_parts
    passwords = CountingPasswords()
    email = unique_email()
    password = "é" * 79 + "A" + "z" * 20  # 100 characters, Unicode kept as typed
    async with maker() as session:
        await create_user(session, passwords, email=email, password=password, name="x")
        await session.commit()
    ctx = CallContext(ip="192.0.2.8", request_id=None)
    differs_at_80 = password[:79] + "B" + password[80:]
    async with maker() as session:
        with pytest.raises(UnauthorizedError):
            await make_service(settings, passwords, client, session).login(ctx, email=email, password=differs_at_80)
    async with maker() as session:
        tokens = await make_service(settings, passwords, client, session).login(ctx, email=email, password=password)
    assert tokens.access_token
