"""How many tasks the agent runs at once: the server's record of the agent, under an optional local cap.

The server's number arrives in `auth/ok` (`concurrency`, sent to agents that ask for features) and may differ
on each connection, so the slots are resizable: lowering them lets running tasks finish and holds new ones
back; raising them starts waiting ones at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from worker.settings import DEFAULT_CONCURRENCY, env_name

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("Slots", "choose_concurrency")


def choose_concurrency(server: int | None, local_cap: int | None) -> tuple[int, str]:
    """The slots to use and why, in words for the log.

    `server` is the `concurrency` of `auth/ok` (None from a server that does not send it); `local_cap` is
    `TASKYARD_WORKER_CONCURRENCY` (None when unset).
    """
    var = env_name("concurrency")
    if server is None:
        if local_cap is None:
            return DEFAULT_CONCURRENCY, f"the server sends no record; {var} unset, the default"
        return local_cap, f"the server sends no record; {var}"
    if local_cap is None:
        return server, "server record"
    if local_cap < server:
        return local_cap, f"server record {server} capped by {var}={local_cap}"
    return server, f"server record; {var}={local_cap} ignored"


class Slots:
    """A semaphore whose size can change while tasks hold it; waiters are served first come, first served."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def free(self) -> int:
        """Slots nobody holds (0 while more are held than the limit, after it was lowered)."""
        return max(self._limit - self._used, 0)

    def resize(self, limit: int) -> None:
        self._limit = limit
        self._wake()

    async def __aenter__(self) -> None:
        if self._used < self._limit and not self._waiters:
            self._used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted a slot, but cancelled before it ran: give it to the next one
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        self._used -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._used < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._used += 1  # counted now, so a later arrival cannot take it first
                waiter.set_result(None)
