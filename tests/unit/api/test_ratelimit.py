"""The rate limiter's decisions at its Redis seam, on fakeredis (its Lua runs there too): fast, no server."""

from __future__ import annotations

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from api.errors import ServiceUnavailableError
from api.ratelimit import RateGuard, RateLimiter, ratelimit_key


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


async def test_allows_up_to_the_limit_then_refuses_with_a_retry_after(redis: fakeredis.FakeAsyncRedis) -> None:
    limiter = RateLimiter(redis, "t")
    decisions = [await limiter.hit("login", "a@example.com", limit=3, window_s=60) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.count for d in decisions] == [1, 2, 3, 4]
    assert 1 <= decisions[-1].retry_after_s <= 60
    assert decisions[0].retry_after_s == 0


async def test_subjects_and_buckets_are_counted_apart(redis: fakeredis.FakeAsyncRedis) -> None:
    limiter = RateLimiter(redis, "t")
    await limiter.hit("login", "a", limit=1, window_s=60)
    assert (await limiter.hit("login", "b", limit=1, window_s=60)).allowed
    assert (await limiter.hit("submit", "a", limit=1, window_s=60)).allowed
    assert not (await limiter.hit("login", "a", limit=1, window_s=60)).allowed


async def test_peek_does_not_count_and_reset_forgets(redis: fakeredis.FakeAsyncRedis) -> None:
    limiter = RateLimiter(redis, "t")
    for _ in range(3):
        assert (await limiter.peek("login", "a", limit=2, window_s=60)).allowed
    await limiter.hit("login", "a", limit=2, window_s=60)
    await limiter.hit("login", "a", limit=2, window_s=60)
    refused = await limiter.peek("login", "a", limit=2, window_s=60)
    assert not refused.allowed
    assert 1 <= refused.retry_after_s <= 60
    await limiter.reset("login", "a")
    assert (await limiter.peek("login", "a", limit=2, window_s=60)).count == 0


async def test_the_window_expires_with_the_key(redis: fakeredis.FakeAsyncRedis) -> None:
    limiter = RateLimiter(redis, "t")
    await limiter.hit("login", "a", limit=1, window_s=60)
    key = ratelimit_key("t", "login", "a")
    assert 0 < await redis.pttl(key) <= 60_000
    await redis.delete(key)  # what the window's expiry does
    assert (await limiter.hit("login", "a", limit=1, window_s=60)).allowed


async def test_a_refused_hit_gives_a_counter_without_ttl_one(redis: fakeredis.FakeAsyncRedis) -> None:
    """Only the script writes counters, always with a TTL; one found without (written by hand) is not
    left to live forever: the first refused hit sets the window."""
    limiter = RateLimiter(redis, "t")
    key = ratelimit_key("t", "login", "a")
    await redis.set(key, 5)
    refused = await limiter.hit("login", "a", limit=1, window_s=60)
    assert not refused.allowed
    assert refused.retry_after_s == 60
    assert 0 < await redis.pttl(key) <= 60_000


def test_keys_never_hold_the_subject() -> None:
    key = ratelimit_key("t", "login", "someone@example.com")
    assert "someone" not in key
    assert key.startswith("t:ratelimit:login:")


async def test_redis_down_fails_closed() -> None:
    class Down(fakeredis.FakeAsyncRedis):
        async def evalsha(self, *args: object, **kwargs: object) -> object:
            raise RedisConnectionError("down")

        async def eval(self, *args: object, **kwargs: object) -> object:
            raise RedisConnectionError("down")

    limiter = RateLimiter(Down(), "t")
    with pytest.raises(ServiceUnavailableError):
        await limiter.hit("login", "a", limit=5, window_s=60)


async def test_a_guarded_hit_is_refused_uncounted_when_a_guard_key_says_so(redis: fakeredis.FakeAsyncRedis) -> None:
    limiter = RateLimiter(redis, "t")
    guard = RateGuard("t:version", 3, ("t:revoked:a", "t:revoked:b"))
    first = await limiter.hit_guarded("submit", "u", guard, limit=5, window_s=60)
    assert first is not None
    assert first.allowed
    assert first.count == 1
    await redis.set("t:revoked:b", "1")
    assert await limiter.hit_guarded("submit", "u", guard, limit=5, window_s=60) is None
    await redis.delete("t:revoked:b")
    await redis.set("t:version", "4")  # tokens below version 4 are dead
    assert await limiter.hit_guarded("submit", "u", guard, limit=5, window_s=60) is None
    await redis.set("t:version", "3")
    again = await limiter.hit_guarded("submit", "u", guard, limit=5, window_s=60)
    assert again is not None
    assert again.count == 2  # the refused hits were not counted
