"""`Coalescer`: calls made in the same event-loop turn share one batched call (one script, one round trip).

Results arrive in bursts (a worker writes what is ready in one `batch` frame, and the server starts a handler
per item in one turn), so gathering per turn needs no timer: nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ("Coalescer",)

T = TypeVar("T")
R = TypeVar("R")

_Entry = tuple["Sequence[T]", "asyncio.Future[Any]", bool]
"""What one caller gave (its items), its future, and whether it takes the list of their results (`submit_many`)."""


class Coalescer(Generic[T, R]):
    """`await call(item)` -> the item's result from `run(items)`, which answers a list in the same order.

    A failure of the batched call fails every caller in it (each retries as it would have alone).
    """

    def __init__(self, run: Callable[[Sequence[T]], Awaitable[list[R]]], *, max_batch: int = 200) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[_Entry[T]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def call(self, item: T) -> R:
        return await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Join this turn's batch without awaiting: a caller that handles the answer in a done callback
        needs no task of its own. Cancelling the future only drops the answer (the item is still sent)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._add((item,), future, False)
        return future

    def submit_many(self, items: Sequence[T]) -> asyncio.Future[list[R]]:
        """`submit` for several items at once: one future for all their results, in order (one done callback
        instead of one per item). The items stay in one batched call, even past `max_batch`."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._add(items, future, True)
        return future

    def _add(self, items: Sequence[T], future: asyncio.Future[Any], many: bool) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((items, future, many))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        batch: list[_Entry[T]] = []
        size = 0
        for entry in pending:
            if batch and size + len(entry[0]) > self._max_batch:
                self._start(batch)
                batch, size = [], 0
            batch.append(entry)
            size += len(entry[0])
        if batch:
            self._start(batch)

    def _start(self, batch: list[_Entry[T]]) -> None:
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run_batch(self, batch: list[_Entry[T]]) -> None:
        try:
            flat = [item for items, _, _ in batch for item in items]
            results = await self._run(flat)
            if len(results) != len(flat):
                raise ValueError(f"{len(results)} results for {len(flat)} items")
        except BaseException as exc:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for items, future, many in batch:
            if not future.done():
                future.set_result(results[at : at + len(items)] if many else results[at])
            at += len(items)
