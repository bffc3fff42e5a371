"""The shared fixtures themselves: a Redis namespace per test, a real database per run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    import redis.asyncio


async def test_redis_client_and_prefix(redis_client: redis.asyncio.Redis, redis_prefix: str) -> None:
    assert redis_prefix.startswith("tytest:")
    await redis_client.set(f"{redis_prefix}:probe", b"1")
    assert await redis_client.get(f"{redis_prefix}:probe") == b"1"


async def test_database_url_connects(database_url: str) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def test_make_settings_uses_the_test_profile(make_settings: Any, redis_url: str, redis_prefix: str) -> None:
    settings = make_settings(TASKYARD_API_ACCESS_TOKEN_TTL_S=5)
    assert settings.ws.heartbeat_interval_s == 0.5
    assert settings.ws.heartbeat_timeout_s == 2.0
    assert settings.auth.access_token_ttl_s == 5
    assert settings.redis.url.reveal() == redis_url
    assert settings.redis.prefix == redis_prefix


def test_api_client_serves_the_app_on_the_test_services(api_client: Any) -> None:
    assert api_client.get("/healthz").status_code == 200
    ready = api_client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "ok"
    assert ready.json()["redis"] == "ok"
