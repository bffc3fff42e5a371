"""The side-job queue: its name, its serializer (JSON, never pickle) and how jobs get onto it.

rq keys are global (`rq:queue:<name>`), so the queue name carries the Redis prefix: two deployments (or
two test runs) sharing one Redis never take each other's jobs. Job arguments are JSON, so a job can
only ever be a call of one of our functions with plain data, whoever can write to Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.settings import ApiSettings

__all__ = ("SERIALIZER", "enqueue", "ops_queue", "queue_name", "sync_redis")

SERIALIZER = JSONSerializer
# Failed side jobs stay in rq's failed-job registry (rq-dashboard shows them) for a week.
FAILURE_TTL_S = 7 * 24 * 3600
RESULT_TTL_S = 24 * 3600


def queue_name(settings: ApiSettings) -> str:
    return f"{settings.redis.prefix}.{settings.ops.jobs_queue}"


def sync_redis(settings: ApiSettings) -> redis.Redis:
    """rq needs a synchronous client; raw bytes (rq decodes what it needs)."""
    if settings.redis.url is None:
        raise ValueError("REDIS_URL is required")
    return redis.Redis.from_url(settings.redis.url.reveal(), socket_connect_timeout=5.0)


def ops_queue(settings: ApiSettings, connection: redis.Redis) -> Queue:
    return Queue(queue_name(settings), connection=connection, serializer=SERIALIZER)


def enqueue(
    settings: ApiSettings,
    connection: redis.Redis,
    func: Callable[..., Any],
    *,
    kwargs: dict[str, Any],
    retry: Retry | None = None,
    job_id: str | None = None,
) -> Any:
    """Put one call of `func(**kwargs)` on the side-job queue (kwargs must be JSON)."""
    return ops_queue(settings, connection).enqueue(
        func,
        kwargs=kwargs,
        retry=retry,
        job_id=job_id,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
    )
