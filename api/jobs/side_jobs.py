"""The functions rq runs (by dotted name, arguments as JSON). Each opens its own engine and clients.

rq runs every job in a forked work horse, so nothing may be carried over from the parent: settings are
read from the environment again and every connection is opened and closed inside the job.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import redis.asyncio

from api.db.base import utcnow
from api.db.session import create_engine, create_sessionmaker
from api.jobs.counts import refresh_counts
from api.jobs.retention import purge
from api.settings import load_settings

if TYPE_CHECKING:
    from api.settings import ApiSettings

__all__ = ("purge_retention", "refresh_task_counts")


def _settings() -> ApiSettings:
    return load_settings(os.environ)


async def _purge(settings: ApiSettings) -> dict[str, int]:
    engine = create_engine(settings.database)
    try:
        report = await purge(create_sessionmaker(engine), settings.ops, now=utcnow())
    finally:
        await engine.dispose()
    return report.as_dict()


def purge_retention() -> dict[str, int]:
    """Periodic: the retention purge (its counts become the job's result)."""
    return asyncio.run(_purge(_settings()))


async def _counts(settings: ApiSettings) -> dict[str, int]:
    if settings.redis.url is None:
        raise ValueError("REDIS_URL is required")
    engine = create_engine(settings.database)
    client = redis.asyncio.Redis.from_url(settings.redis.url.reveal())
    try:
        # Three intervals: one missed run is not yet "stale".
        ttl = 3 * settings.ops.counts_interval_s
        return await refresh_counts(create_sessionmaker(engine), client, settings.redis.prefix, ttl_s=ttl)
    finally:
        await client.aclose()
        await engine.dispose()


def refresh_task_counts() -> dict[str, int]:
    """Periodic: publish task counts by status for `/metrics`."""
    return asyncio.run(_counts(_settings()))
