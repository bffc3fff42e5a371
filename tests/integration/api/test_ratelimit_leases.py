"""Rate-limit leases (api/ratelimit.py) against a real Redis: every admitted hit is counted before it is
admitted, so two replicas together never pass the limit; a refused lease refuses locally until its window
ends; a revocation key refuses a lease renewal and the guard-only check alike."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from api.ratelimit import RateGuard, RateLimiter, lease_max, ratelimit_key

pytestmark = pytest.mark.redis


async def _admit(limiter: RateLimiter, guard: RateGuard, subject: str, limit: int) -> bool | None:
    """One submit the way `authenticate_counting` makes it: the lease first, else one script call."""
    local = limiter.take_local("b", subject)
    if local is None:
        local = await limiter.hit_guarded("b", subject, guard, limit=limit, window_s=60, lease=True)
    return None if local is None else local.allowed


async def test_two_replicas_never_admit_past_the_limit(redis_client: redis.asyncio.Redis, redis_prefix: str) -> None:
    a, b = RateLimiter(redis_client, redis_prefix), RateLimiter(redis_client, redis_prefix)
    guard = RateGuard(f"{redis_prefix}:version", 1, (f"{redis_prefix}:revoked",))
    limit = 100
    admitted = 0
    for i in range(300):
        if await _admit(a if i % 3 else b, guard, "subject", limit):
            admitted += 1
    # Never past the limit; short of it by at most what the other replica reserved and did not use.
    assert limit - lease_max(limit) <= admitted <= limit
    counted = int(await redis_client.get(ratelimit_key(redis_prefix, "b", "subject")) or 0)
    assert counted >= admitted
    refused = a.take_local("b", "subject")
    assert refused is not None
    assert not refused.allowed
    assert 1 <= refused.retry_after_s <= 60


async def test_concurrent_renewals_on_one_replica_lose_no_hits(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    limiter = RateLimiter(redis_client, redis_prefix)
    guard = RateGuard(f"{redis_prefix}:version", 1)
    limit = 100
    admitted = 0
    for _ in range(5):  # waves of 30 submits at once: each wave's renewals overlap
        wave = await asyncio.gather(*(_admit(limiter, guard, "burst", limit) for _ in range(30)))
        admitted += sum(1 for allowed in wave if allowed)
    # One replica: every hit it reserved is admitted in the end, so exactly the limit.
    assert admitted == limit


async def test_a_lease_grows_by_doubling_and_stays_counted(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    limiter = RateLimiter(redis_client, redis_prefix)
    guard = RateGuard(f"{redis_prefix}:version", 1)
    key = ratelimit_key(redis_prefix, "b", "grow")
    counts = []
    for _ in range(15):
        assert await _admit(limiter, guard, "grow", 10_000)
        counts.append(int(await redis_client.get(key) or 0))
    # Leases of 1, 2, 4, 8 hits: Redis is called on the 1st, 2nd, 4th and 8th submit only.
    assert counts == [1, 3, 3, 7, 7, 7, 7, 15, 15, 15, 15, 15, 15, 15, 15]


async def test_a_revocation_refuses_the_next_script_call(redis_client: redis.asyncio.Redis, redis_prefix: str) -> None:
    limiter = RateLimiter(redis_client, redis_prefix)
    revoked = f"{redis_prefix}:revoked"
    guard = RateGuard(f"{redis_prefix}:version", 1, (revoked,))
    for _ in range(2):  # the second takes a lease of 2: one hit is left in it
        assert await _admit(limiter, guard, "s", 10_000)
    await redis_client.set(revoked, "1")
    # With hits left, the call checks the guard only: refused, nothing counted, the lease kept.
    assert await limiter.hit_guarded("b", "s", guard, limit=10_000, window_s=60, lease=True) is None
    assert int(await redis_client.get(ratelimit_key(redis_prefix, "b", "s")) or 0) == 3
    await redis_client.set(f"{redis_prefix}:version", 2)
    await redis_client.delete(revoked)
    assert await limiter.hit_guarded("b", "s", guard, limit=10_000, window_s=60, lease=True) is None
