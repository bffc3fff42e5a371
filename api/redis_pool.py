"""The API's command connection pool: redis-py's blocking pool semantics with a cheap checkout.

Every Redis command checks a connection out and back in. redis-py's `BlockingConnectionPool` does each
under an `asyncio.Condition`, a fresh timeout context, an async context manager, and per-checkout metrics
and release events; profiled during sequential `POST /api/tasks`, the two calls were ~12 % of the API's
request time. Here a checkout is a list pop and a set add, a check-in the reverse, plus the same
`ensure_connection` check redis-py does. A full pool still makes callers wait (first come, first
served) up to `timeout`, then raises `ConnectionError`, as `BlockingConnectionPool` does.

Not kept: redis-py's observability counters for the pool (the API configures none) and the release event
(its listeners serve re-authentication with streaming credentials, which the API does not use).
Maintenance notifications are switched off for this pool's connections (a Redis Enterprise feature whose
handlers rewrite pool state under the lock this pool does not take).
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.maint_notifications import MaintNotificationsConfig

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

__all__ = ("LeanBlockingPool",)


class LeanBlockingPool(redis.asyncio.ConnectionPool):
    """At most `max_connections`; a caller finding none free waits up to `timeout` s (None: forever)."""

    def __init__(self, *, timeout: float | None = 20.0, **kwargs: Any) -> None:
        kwargs.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
        super().__init__(**kwargs)
        self.timeout = timeout
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        connection = self._take()
        if connection is None:
            connection = await self._wait_for_one()
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    def _take(self) -> AbstractConnection | None:
        if self._available_connections:
            connection: AbstractConnection = self._available_connections.pop()
        elif len(self._in_use_connections) < self.max_connections:
            connection = self.make_connection()  # type: ignore[no-untyped-call]
        else:
            return None
        self._in_use_connections.add(connection)
        return connection

    async def _wait_for_one(self) -> AbstractConnection:
        """Wait in line until a release wakes this caller and a connection is free."""
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if not waiter.done():
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake_one()  # woken, but leaving (cancelled): the turn passes on
                if isinstance(exc, TimeoutError):
                    raise RedisConnectionError("No connection available.") from None
                raise
            connection = self._take()
            if connection is not None:
                return connection

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def release(self, connection: AbstractConnection) -> None:
        """Back to the pool (an error if it is not this pool's, as in redis-py), waking one waiting caller."""
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)
        self._wake_one()
