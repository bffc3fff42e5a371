"""The API's command connection class (`_PromptWriteConnection`) against a real Redis: small commands
written without redis-py's per-send `wait_for`, a large one still drained, a dropped connection still
an error that the next command recovers from."""

from __future__ import annotations

import pytest
import redis.asyncio
import redis.exceptions

from api.app import _PromptWriteConnection

pytestmark = pytest.mark.redis


def _client(redis_url: str) -> redis.asyncio.Redis:
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        redis_url, socket_timeout=5.0, max_connections=2, timeout=5.0, connection_class=_PromptWriteConnection
    )
    return redis.asyncio.Redis.from_pool(pool)


async def test_commands_round_trip_small_and_large(redis_url: str, redis_prefix: str) -> None:
    client = _client(redis_url)
    try:
        big = b"x" * (8 * 1024 * 1024)  # more than a socket buffer takes at once: the drain path
        await client.set(f"{redis_prefix}:big", big)
        for n in range(50):
            await client.set(f"{redis_prefix}:{n}", n)
        assert await client.get(f"{redis_prefix}:big") == big
        assert await client.mget([f"{redis_prefix}:{n}" for n in range(50)]) == [str(n).encode() for n in range(50)]
        conn = await client.connection_pool.get_connection()
        assert isinstance(conn, _PromptWriteConnection)
        await client.connection_pool.release(conn)
    finally:
        await client.aclose()


async def test_a_killed_connection_fails_its_command_and_the_next_one_reconnects(
    redis_url: str, redis_prefix: str
) -> None:
    client = _client(redis_url)
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.client_setname("prompt-write-test")
        killed = 0
        for entry in await admin.client_list():
            if entry.get("name") == "prompt-write-test":
                killed += await admin.client_kill_filter(_id=entry["id"])
        assert killed == 1
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.set(f"{redis_prefix}:after", 1)
        await client.set(f"{redis_prefix}:after", 2)
        assert await client.get(f"{redis_prefix}:after") == b"2"
    finally:
        await admin.aclose()
        await client.aclose()
