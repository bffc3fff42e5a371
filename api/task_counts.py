"""Task counts by status, kept in one Redis hash by a periodic side job so `/metrics` never scans `tasks`.

Every API replica's scrape reads the hash (one HGETALL); the GROUP BY runs once per interval in the jobs
process, however many replicas and scrapers there are. The hash expires if the jobs process stops, and
`/metrics` then falls back to counting in the database itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from api.db.models.tasks import Task
from protocol.status import TaskStatus

if TYPE_CHECKING:
    import redis.asyncio
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ("counts_key", "read_counts", "refresh_counts")

_AT = "_at"


def counts_key(prefix: str) -> str:
    return f"{prefix}:ops:task_counts"


async def refresh_counts(
    sessionmaker: async_sessionmaker[AsyncSession], redis: redis.asyncio.Redis, prefix: str, *, ttl_s: int
) -> dict[str, int]:
    """Count once and publish; the hash lives `ttl_s` so a stopped jobs process is noticed, not shown as fresh."""
    async with sessionmaker() as session:
        rows = (await session.execute(select(Task.status, func.count()).group_by(Task.status))).all()
    counts = {str(s): 0 for s in TaskStatus}
    counts.update({str(status): int(n) for status, n in rows})
    key = counts_key(prefix)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        mapping: dict[Any, Any] = {**counts, _AT: int(time.time())}
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, max(1, ttl_s))
        await pipe.execute()
    return counts


async def read_counts(redis: redis.asyncio.Redis, prefix: str) -> dict[str, int] | None:
    """The published counts, or None when no jobs process has published recently."""
    raw = await redis.hgetall(counts_key(prefix))
    if not raw:
        return None
    out: dict[str, int] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        if name != _AT:
            out[name] = int(v)
    return out
