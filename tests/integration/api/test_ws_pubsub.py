"""The fan-out's own pub/sub reader against a real Redis: every message once and in order, several per read
when they queue up, control messages in their place; a dropped connection ends the read, and the fan-out
closes its watchers with 1013, subscribes again and delivers again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest
import redis.asyncio
import redis.exceptions

from api.ws.events import WatchEvent
from api.ws.fanout import Fanout
from api.ws.framing import CloseCode
from api.ws.pubsub import PubSubReader
from api.ws.registry import SessionRegistry
from scheduler.keys import Keys

pytestmark = pytest.mark.redis


def _client(redis_url: str, name: str) -> redis.asyncio.Redis:
    # The API's options (RESP3, raw bytes); a client name so a test can kill just this connection.
    return redis.asyncio.Redis.from_url(
        redis_url, protocol=3, legacy_responses=True, decode_responses=False, client_name=name
    )


def _watch_message(task_id: str, seq: int) -> bytes:
    payload = {"taskId": task_id, "seq": seq, "attempt": 1, "data": {"n": seq}}
    return msgspec.json.encode(
        {"type": "task/progress", "ownerId": "u1", "taskId": task_id, "seq": seq, "payload": payload}
    )


@dataclass(frozen=True)
class _Conn:
    """A named API-style client (what the reader subscribes on) and an admin client to publish and kill with."""

    keys: Keys
    name: str
    client: redis.asyncio.Redis
    admin: redis.asyncio.Redis


@pytest.fixture
async def conn(redis_url: str, redis_prefix: str) -> AsyncIterator[_Conn]:
    name = f"pubsub-test-{secrets.token_hex(4)}"
    client, admin = _client(redis_url, name), redis.asyncio.Redis.from_url(redis_url)
    try:
        yield _Conn(Keys(redis_prefix), name, client, admin)
    finally:
        await admin.aclose()
        await client.aclose()


@pytest.fixture
async def reader(conn: _Conn) -> AsyncIterator[PubSubReader]:
    subscribed = PubSubReader(conn.client)
    try:
        yield subscribed
    finally:
        await subscribed.close()


async def _kill(admin: redis.asyncio.Redis, name: str) -> int:
    """Kill the subscribed connection(s) of that name (the client's command connections keep the name too)."""
    killed = 0
    for entry in await admin.client_list():
        if entry.get("name") == name and int(entry.get("psub", 0)) > 0:
            killed += await admin.client_kill_filter(_id=entry["id"])
    return killed


async def test_reads_every_message_in_order_several_per_read(conn: _Conn, reader: PubSubReader) -> None:
    keys, admin = conn.keys, conn.admin
    assert await reader.subscribe(patterns=[keys.watch_pattern()], channels=[keys.control_channel()]) == []
    async with admin.pipeline(transaction=False) as pipe:
        for seq in range(1, 501):
            pipe.publish(keys.watch_channel("u1"), _watch_message("t1", seq))
            if seq == 250:
                pipe.publish(keys.control_channel(), b'{"kind":"agent_updated","id":"none"}')
        await pipe.execute()
    got: list[list[bytes]] = []
    reads = 0
    async with asyncio.timeout(10):
        while len(got) < 501:
            got += await reader.read()
            reads += 1
    assert reads < 501  # replies that arrived together were taken together
    kinds = [reply[0] for reply in got]
    assert kinds.index(b"message") == 250
    assert kinds.count(b"message") == 1
    seqs = [msgspec.json.decode(reply[3])["seq"] for reply in got if reply[0] == b"pmessage"]
    assert seqs == list(range(1, 501))
    assert {reply[2] for reply in got if reply[0] == b"pmessage"} == {keys.watch_channel("u1").encode()}


async def test_a_dropped_connection_ends_the_read(conn: _Conn, reader: PubSubReader) -> None:
    await reader.subscribe(patterns=[conn.keys.watch_pattern()], channels=[])
    assert await _kill(conn.admin, conn.name) == 1
    with pytest.raises(redis.exceptions.ConnectionError):
        async with asyncio.timeout(5):
            await reader.read()


class _Watcher:
    """A session stand-in that records what it is given and whether it was asked to close."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.closed: int | None = None

    def deliver(self, event: WatchEvent) -> None:
        self.events.append(event)

    def deliver_agent_status(self, event: object) -> None:
        return None

    def request_close(self, code: int, reason: str) -> None:
        self.closed = code


async def test_the_fanout_closes_its_watchers_resubscribes_and_delivers_again(conn: _Conn, redis_prefix: str) -> None:
    keys, name, admin = conn.keys, conn.name, conn.admin
    registry = SessionRegistry()
    fanout = Fanout(conn.client, prefix=redis_prefix, registry=registry)
    before = _Watcher()
    registry.watch_owner("u1", before)
    await fanout.start()
    try:
        assert fanout.ready.is_set()
        await admin.publish(keys.watch_channel("u1"), _watch_message("t1", 1))
        async with asyncio.timeout(5):
            while not before.events:
                await asyncio.sleep(0.01)
        assert [e.seq for e in before.events] == [1]
        assert msgspec.json.decode(before.events[0].frame)["type"] == "task/progress"

        assert await _kill(admin, name) == 1
        async with asyncio.timeout(5):
            while before.closed is None:
                await asyncio.sleep(0.01)
        assert before.closed == CloseCode.TRY_AGAIN_LATER
        registry.unwatch_owner("u1", before)  # what the closed session does on its way out

        after = _Watcher()
        registry.watch_owner("u1", after)
        async with asyncio.timeout(5):
            while not fanout.ready.is_set():
                await asyncio.sleep(0.01)
        await admin.publish(keys.watch_channel("u1"), _watch_message("t1", 2))
        async with asyncio.timeout(5):
            while not after.events:
                await asyncio.sleep(0.01)
        assert [e.seq for e in after.events] == [2]
    finally:
        await fanout.stop()
