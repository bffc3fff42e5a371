"""A long-lived loop owned by a lifespan: `start()`, `stop()`, and pauses that end at once on stop.

Why more than `task.cancel()`: a cancellation that lands inside a database driver call can come
back as the driver's own error (a `CancelledError` turned into an `OperationalError`), which a
loop's catch-all would log and retry forever. So `stop()` also sets a flag the loop checks, and a
caught error while cancellation is pending is re-raised as the cancellation it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

__all__ = ("BackgroundLoop",)


class BackgroundLoop:
    """Subclasses implement `run()` as `while self.running: ...` and call `await self.pause(s)`."""

    name = "background-loop"

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return not self._stopping.is_set()

    async def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`; returns early when `stop()` is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))

    @staticmethod
    def raise_if_cancelling() -> None:
        """Call in an `except Exception` block: a cancellation disguised as an error ends the loop."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    def run(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
