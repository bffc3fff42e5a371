"""What the task side of the API adds to the app: route handlers and lifespan components.

`api.app.create_app` imports these two names; the task package fills them in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import Litestar

__all__ = ("lifespans", "route_handlers")


def route_handlers() -> Sequence[Any]:
    return []


@asynccontextmanager
async def _nothing(app: Litestar) -> AsyncIterator[None]:
    yield


def lifespans() -> Sequence[Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    return [_nothing]
