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
from api.jobs.retention import purge
from api.settings import load_settings

if TYPE_CHECKING:
    from api.settings import ApiSettings

__all__ = ("deliver_webhook", "fire_schedules", "purge_retention", "scan_webhooks")

# Backoff between webhook attempts; the last value repeats.
WEBHOOK_BACKOFF_S = (10, 30, 120, 600, 1800)


class WebhookDeliveryError(RuntimeError):
    """Raised so rq records the attempt as failed and retries it (the delivery row says why)."""


def _settings() -> ApiSettings:
    return load_settings(os.environ)


async def _purge(settings: ApiSettings) -> dict[str, int]:
    from scheduler.client import SchedulerClient

    engine = create_engine(settings.database)
    client = _redis(settings)
    try:
        scheduler = SchedulerClient(client, prefix=settings.redis.prefix, settings=settings.scheduler)
        report = await purge(create_sessionmaker(engine), settings.ops, now=utcnow(), forget=scheduler.forget_finished)
    finally:
        await client.aclose()
        await engine.dispose()
    return report.as_dict()


def purge_retention() -> dict[str, int]:
    """Periodic: the retention purge (its counts become the job's result)."""
    return asyncio.run(_purge(_settings()))


def _redis(settings: ApiSettings) -> redis.asyncio.Redis:
    if settings.redis.url is None:
        raise ValueError("REDIS_URL is required")
    # The same reply shape as the API's clients (the scheduler client expects it).
    return redis.asyncio.Redis.from_url(
        settings.redis.url.reveal(), protocol=3, legacy_responses=True, decode_responses=False, socket_timeout=10
    )


async def _fire(settings: ApiSettings) -> dict[str, int]:
    from api.schedules.firing import fire_due
    from scheduler.client import SchedulerClient

    engine = create_engine(settings.database)
    client = _redis(settings)
    try:
        scheduler = SchedulerClient(client, prefix=settings.redis.prefix, settings=settings.scheduler)
        submitted = await fire_due(create_sessionmaker(engine), scheduler, settings.ops, now=utcnow())
    finally:
        await client.aclose()
        await engine.dispose()
    return {"submitted": submitted}


def fire_schedules() -> dict[str, int]:
    """Periodic: submit the tasks of every due schedule occurrence."""
    return asyncio.run(_fire(_settings()))


async def _scan(settings: ApiSettings) -> list[str]:
    from api.webhooks.delivery import collect

    engine = create_engine(settings.database)
    client = _redis(settings)
    try:
        return await collect(create_sessionmaker(engine), client, settings.redis.prefix, now=utcnow())
    finally:
        await client.aclose()
        await engine.dispose()


def scan_webhooks() -> dict[str, int]:
    """Periodic: one delivery job per task that finished since the last scan (for owners with a webhook)."""
    from rq import Retry

    from api.jobs.queue import enqueue, sync_redis

    settings = _settings()
    ids = asyncio.run(_scan(settings))
    if ids:
        retries = max(0, settings.ops.webhook_max_attempts - 1)
        connection = sync_redis(settings)
        try:
            for delivery_id in ids:
                enqueue(
                    settings,
                    connection,
                    deliver_webhook,
                    kwargs={"delivery_id": delivery_id},
                    retry=Retry(max=retries, interval=list(WEBHOOK_BACKOFF_S)) if retries else None,
                    job_id=f"webhook-{delivery_id}",
                )
        finally:
            connection.close()
    return {"enqueued": len(ids)}


async def _deliver(settings: ApiSettings, delivery_id: str, *, last_attempt: bool) -> str:
    from api.webhooks.delivery import deliver

    engine = create_engine(settings.database)
    try:
        return await deliver(create_sessionmaker(engine), settings, delivery_id, last_attempt=last_attempt)
    finally:
        await engine.dispose()


def deliver_webhook(delivery_id: str) -> str:
    """One delivery attempt; raising hands the retry (with backoff) to rq."""
    from rq import get_current_job

    job = get_current_job()
    retries_left = getattr(job, "retries_left", None) if job is not None else None
    status = asyncio.run(_deliver(_settings(), delivery_id, last_attempt=not retries_left))
    if status in ("retrying", "failed"):
        raise WebhookDeliveryError(f"delivery {delivery_id}: {status}")
    return status
