"""`run()`: `asyncio.run` on uvloop where it is installed (it ships with `uvicorn[standard]`), else the stdlib loop.

The process spends most of its time in socket I/O, where uvloop's event loop costs markedly less CPU per
message than the default one. (The scheduler and the worker each keep this copy: neither may import the other.)
"""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ("GC_YOUNG_THRESHOLD", "run", "tune_gc")

T = TypeVar("T")


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections (CPython's default is 700)."""


def tune_gc() -> None:
    """Collect the worker process' young generation every `GC_YOUNG_THRESHOLD` allocations: each frame and message
    allocates short-lived containers, and at the default threshold the collector runs every few messages (~15-20 %
    less worker CPU per batch task at 50,000, docs/benchmarks.md; a few MB held meanwhile). Called by the worker's
    entry point, not by `run`, so tests that run loops keep the interpreter's default."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh event loop: uvloop's when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
