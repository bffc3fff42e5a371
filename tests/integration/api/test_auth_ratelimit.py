"""Login and registration limits: Redis-backed, answered 429 with Retry-After, counted before hashing."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio
import sqlalchemy as sa
from litestar.testing import TestClient

from api.app import create_app
from api.ratelimit import RateGuard, RateLimiter
from tests.integration.api.test_auth_flow import CHEAP_ARGON2, PASSWORD, register, sync_url, unique_email


@pytest.fixture
def client(make_settings: Callable[..., Any]) -> Iterator[TestClient[Any]]:
    settings = make_settings(
        **CHEAP_ARGON2,
        TASKYARD_API_LOGIN_FAILURES_PER_ACCOUNT_IP=3,
        TASKYARD_API_LOGIN_ATTEMPTS_PER_IP=8,
        TASKYARD_API_REGISTER_PER_IP=3,
        TASKYARD_API_TRUSTED_PROXIES="127.0.0.1",
    )
    app = create_app(settings)
    app.asgi_handler = _from_proxy(app.asgi_handler)
    with TestClient(app=app) as test_client:
        yield test_client


def _from_proxy(handler: Any) -> Any:
    """Every test request arrives from 127.0.0.1, the trusted proxy (TestClient's peer is `testclient`)."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await handler({**scope, "client": ("127.0.0.1", 50000)}, receive, send)

    return asgi


def _login(client: TestClient[Any], email: str, password: str, ip: str) -> Any:
    return client.post("/api/auth/login", json={"email": email, "password": password}, headers={"X-Forwarded-For": ip})


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["error"] == "rate_limited"
    assert body["code"] == 1029
    assert body["requestId"] == response.headers["x-request-id"]


def test_failures_per_account_and_ip_lock_that_pair_only(client: TestClient[Any]) -> None:
    email = unique_email()
    ip = f"10.0.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    register(client, email, PASSWORD)
    for _ in range(3):
        assert _login(client, email, "wrong password", ip).status_code == 401
    # Locked for this (account, ip): even the right password gets 429, so the lock is no oracle.
    assert_rate_limited(_login(client, email, PASSWORD, ip))
    assert_rate_limited(_login(client, email, PASSWORD, ip))
    # The same account from another address still logs in.
    assert _login(client, email, PASSWORD, "10.0.0.2").status_code == 200
    # Refusals are audited once per (account, ip) and window, not once per request.
    engine = sa.create_engine(sync_url(client.app.state.settings.database.url.reveal()))
    with engine.connect() as conn:
        limited = conn.execute(
            sa.text("SELECT count(*) FROM audit_log WHERE action = 'login' AND outcome = 'rate_limited' AND ip = :ip"),
            {"ip": ip},
        ).scalar_one()
    engine.dispose()
    assert limited == 1


def test_attempts_per_ip_are_capped_across_accounts(client: TestClient[Any]) -> None:
    ip = f"10.1.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    statuses = [_login(client, unique_email(), "whatever-pass", ip).status_code for _ in range(10)]
    assert statuses[:8] == [401] * 8
    assert statuses[8:] == [429, 429]
    assert_rate_limited(_login(client, unique_email(), "whatever-pass", ip))


def test_registration_is_limited_per_ip(client: TestClient[Any]) -> None:
    def attempt() -> Any:
        return client.post(
            "/api/auth/register",
            json={"email": unique_email(), "password": PASSWORD, "name": "x"},
            headers={"X-Forwarded-For": "10.2.0.1"},
        )

    assert [attempt().status_code for _ in range(3)] == [201, 201, 201]
    assert_rate_limited(attempt())


async def test_limiter_counts_atomically_and_every_key_expires(redis_url: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5)
    try:
        limiter = RateLimiter(client, redis_prefix)
        decisions = [await limiter.hit("b", "subject", limit=2, window_s=60) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert 1 <= decisions[2].retry_after_s <= 60
        peek = await limiter.peek("b", "subject", limit=2, window_s=60)
        assert not peek.allowed
        assert peek.count == 3  # peeking does not count
        assert (await limiter.peek("b", "other", limit=2, window_s=60)).allowed
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        assert keys
        for key in keys:
            assert await client.pttl(key) > 0
            assert b"subject" not in key  # subjects are hashed out of key names
        await limiter.reset("b", "subject")
        assert (await limiter.hit("b", "subject", limit=2, window_s=60)).allowed
    finally:
        await client.aclose()


async def test_an_allowed_guarded_hit_costs_two_commands_in_its_script(redis_url: str, redis_prefix: str) -> None:
    """What each `POST /api/tasks` sends: the script reads every guard key in one MGET and counts with one
    INCRBY (no PTTL while allowed); the window's PEXPIRE only when the hit opens it, PTTL only when refused.
    Counted with MONITOR, filtered to this test's keys, so other clients of the shared Redis do not show."""
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5)
    try:
        limiter = RateLimiter(client, redis_prefix)
        guard = RateGuard(f"{redis_prefix}:version", 1, (f"{redis_prefix}:revoked-a", f"{redis_prefix}:revoked-b"))
        await limiter.hit_guarded("b", "warm-up", guard, limit=2, window_s=60)  # the script is loaded
        async with client.monitor() as monitor:
            for _ in range(3):
                await limiter.hit_guarded("b", "subject", guard, limit=2, window_s=60)
            end = f"{redis_prefix}:end"
            await client.get(end)
            seen: list[str] = []
            while True:
                command = (await monitor.next_command())["command"]
                if command == f"GET {end}":
                    break
                if redis_prefix in command:  # the script's call names our keys too; other clients' do not
                    seen.append(command.split(" ", 1)[0].upper())
        # Opening the window, allowed; then allowed; then refused (the time left is read for Retry-After).
        assert seen == [
            *("EVALSHA", "MGET", "INCRBY", "PEXPIRE"),
            *("EVALSHA", "MGET", "INCRBY"),
            *("EVALSHA", "MGET", "INCRBY", "PTTL"),
        ]
    finally:
        await client.aclose()
