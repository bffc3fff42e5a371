"""`run()`: `asyncio.run` on uvloop where it is installed (it ships with `uvicorn[standard]`), else the stdlib loop.

The process spends most of its time in socket I/O, where uvloop's event loop costs markedly less CPU per
message than the default one. (The scheduler and the worker each keep this copy: neither may import the other.)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ("run",)

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh event loop: uvloop's when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
