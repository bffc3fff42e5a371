"""`Coalescer`: calls made in the same event-loop turn share one batched call (one script, one round trip).

Results arrive in bursts (a worker writes what is ready in one `batch` frame, and the server starts a handler
per item in one turn), so gathering per turn needs no timer: nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ("Coalescer",)

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`await call(item)` -> the item's result from `run(items)`, which answers a list in the same order.

    A failure of the batched call fails every caller in it (each retries as it would have alone).
    """

    def __init__(self, run: Callable[[Sequence[T]], Awaitable[list[R]]], *, max_batch: int = 200) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def call(self, item: T) -> R:
        return await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Join this turn's batch without awaiting: a caller that handles the answer in a done callback
        needs no task of its own. Cancelling the future only drops the answer (the item is still sent)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            task = asyncio.get_running_loop().create_task(self._run_batch(pending[start : start + self._max_batch]))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
