"""The fan-out's pub/sub connection, read in batches: every message one socket read brought, at once.

Why not redis-py's `PubSub.get_message()`: per message it runs a retry wrapper, a timeout context, the RESP3
push handler (which formats every message into a debug string, logged or not) and builds a dict; while
streaming 10,000 events/s that was about a fifth of the API process. Here redis-py still connects (TCP, TLS
or a unix socket, AUTH, HELLO, with the pool's own connection class and options) and hiredis still parses;
only the reading loop is ours: one socket read, then every complete reply in the buffer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import redis.asyncio
import redis.exceptions
from redis._parsers import _AsyncHiredisParser
from redis._parsers.hiredis import NOT_ENOUGH_DATA

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

__all__ = ("PubSubReader",)

_CONFIRMS = frozenset({b"subscribe", b"psubscribe", "subscribe", "psubscribe"})


class _BatchParser(_AsyncHiredisParser):
    """redis-py's hiredis parser, plus a read of every reply the buffer holds."""

    async def read_batch(self) -> list[Any]:
        """The complete replies buffered now; when there is none, read the socket until there is one."""
        replies = self._buffered()
        while not replies:
            await self.read_from_socket()  # type: ignore[no-untyped-call]  # raises ConnectionError on EOF
            replies = self._buffered()
        return replies

    def _buffered(self) -> list[Any]:
        reader = self._reader
        if reader is None or not self._connected:
            raise redis.exceptions.ConnectionError("pub/sub connection closed")
        replies: list[Any] = []
        while (reply := reader.gets()) is not NOT_ENOUGH_DATA:
            if isinstance(reply, Exception):
                raise reply
            replies.append(reply)
        return replies


class PubSubReader:
    """One dedicated connection subscribed to some patterns and channels; `read()` yields messages in batches.

    A message is the reply as Redis sent it: `[b"pmessage", pattern, channel, data]` or
    `[b"message", channel, data]` (str instead of bytes when the pool decodes responses).
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        pool = client.connection_pool
        kwargs = {**pool.connection_kwargs, "parser_class": _BatchParser}
        self._conn: AbstractConnection = pool.connection_class(**kwargs)
        self._parser: _BatchParser = self._conn._parser  # type: ignore[assignment]

    async def subscribe(self, *, patterns: list[str], channels: list[str], timeout_s: float = 5.0) -> list[Any]:
        """Connect and subscribe; return once every subscription is confirmed, with any message read meanwhile."""
        conn = self._conn
        await conn.connect()  # type: ignore[no-untyped-call]
        if patterns:
            await conn.send_command("PSUBSCRIBE", *patterns)
        if channels:
            await conn.send_command("SUBSCRIBE", *channels)
        waiting = len(patterns) + len(channels)
        early: list[Any] = []
        try:
            async with asyncio.timeout(timeout_s):
                while waiting:
                    for reply in await self._parser.read_batch():
                        if waiting and reply[0] in _CONFIRMS:
                            waiting -= 1
                        else:
                            early.append(reply)
        except TimeoutError:
            raise redis.exceptions.TimeoutError("no subscribe confirmation from Redis") from None
        return early

    async def read(self) -> list[Any]:
        """The next messages (at least one), in the order Redis sent them."""
        return await self._parser.read_batch()

    async def close(self) -> None:
        await self._conn.disconnect()
