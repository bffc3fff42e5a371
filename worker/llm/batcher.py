"""Tokens to `task/stream` pieces: at most one piece per window per task, none held back after a quiet spell.

A token arriving when the last piece went out at least `window_s` ago is sent at once (no added latency for
ordinary streams, whose tokens are tens of milliseconds apart); tokens arriving faster gather and leave
together at the end of the window, which bounds frames per task for fast providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.context import TaskContext

__all__ = ("TokenBatcher",)


class TokenBatcher:
    """Feeds one task's `ctx.stream()`; `close()` sends what is left, `discard()` drops the timer (on cancel)."""

    def __init__(self, ctx: TaskContext[Any], window_s: float) -> None:
        self._ctx = ctx
        self._window_s = window_s
        self._buffer: list[str] = []
        self._sent_at = -float("inf")
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # pieces leave in order even when the timer and a token race

    async def push(self, text: str) -> None:
        """Take one token."""
        self._buffer.append(text)
        wait_s = self._sent_at + self._window_s - time.monotonic()
        if wait_s <= 0:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_after(wait_s))

    async def _flush_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            self._sent_at = time.monotonic()
            await self._ctx.stream(text)

    async def close(self) -> None:
        """Send what is buffered (the end of the answer)."""
        await self.discard()
        await self._flush()

    async def discard(self) -> None:
        """Stop the pending timer (the task was canceled: no more pieces)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
