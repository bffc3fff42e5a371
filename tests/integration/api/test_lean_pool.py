"""The API's command pool (`LeanBlockingPool`) against a real Redis: a full pool makes callers wait their turn
and then serves them, times out with redis-py's error, and a waiter that gives up does not strand the
connection it was woken for."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
import redis.exceptions

from api.app import _PromptWriteConnection
from api.redis_pool import LeanBlockingPool

pytestmark = pytest.mark.redis


def _client(redis_url: str, *, size: int, timeout: float) -> redis.asyncio.Redis:
    pool = LeanBlockingPool.from_url(
        redis_url, socket_timeout=5.0, max_connections=size, timeout=timeout, connection_class=_PromptWriteConnection
    )
    return redis.asyncio.Redis.from_pool(pool)


async def test_more_callers_than_connections_all_get_answers(redis_url: str, redis_prefix: str) -> None:
    client = _client(redis_url, size=2, timeout=5.0)
    try:
        # BLPOP holds its connection for its timeout: both connections busy, the rest wait for them.
        slow = [asyncio.ensure_future(client.blpop([f"{redis_prefix}:none"], timeout=0.2)) for _ in range(2)]
        await asyncio.sleep(0.05)
        fast = [asyncio.ensure_future(client.incr(f"{redis_prefix}:n")) for _ in range(20)]
        assert await asyncio.gather(*slow) == [None, None]
        assert sorted(await asyncio.gather(*fast)) == list(range(1, 21))
        pool = client.connection_pool
        assert len(pool._in_use_connections) == 0
        assert len(pool._available_connections) == 2
    finally:
        await client.aclose()


async def test_a_full_pool_times_out_with_a_connection_error(redis_url: str, redis_prefix: str) -> None:
    client = _client(redis_url, size=1, timeout=0.1)
    try:
        held = asyncio.ensure_future(client.blpop([f"{redis_prefix}:none"], timeout=1))
        await asyncio.sleep(0.05)
        with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
            await client.get(f"{redis_prefix}:x")
        assert await held is None
        assert await client.get(f"{redis_prefix}:x") is None  # the pool still serves
    finally:
        await client.aclose()


async def test_a_cancelled_waiter_passes_its_turn_on(redis_url: str, redis_prefix: str) -> None:
    client = _client(redis_url, size=1, timeout=5.0)
    pool = client.connection_pool
    assert isinstance(pool, LeanBlockingPool)
    try:
        conn = await pool.get_connection()
        first = asyncio.ensure_future(client.get(f"{redis_prefix}:a"))
        second = asyncio.ensure_future(client.set(f"{redis_prefix}:b", 1))
        await asyncio.sleep(0.01)
        await pool.release(conn)  # wakes `first`...
        first.cancel()  # ...which leaves before it runs: `second` must get the connection
        assert await asyncio.wait_for(second, 2.0) is True
        assert first.cancelled()
        assert len(pool._in_use_connections) == 0
    finally:
        await client.aclose()
