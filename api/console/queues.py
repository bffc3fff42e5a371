"""`GET /api/admin/queues`: what waits where, for how long, and how fast tasks finish (read-only, admins).

Depths come from Redis (the scheduler's queues are the truth about what waits); ages and throughput come
from the database rows. One bounded pass per request: at most `MAX_ROUTES` routes, ten priorities each.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import msgspec
from litestar import Request, get
from litestar.params import Parameter
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves handler hints at runtime

from api.auth.guards import requires_admin
from api.db.base import utcnow
from api.db.models.tasks import Task
from scheduler.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ("QueueStats", "queue_stats")

MAX_ROUTES = 200
"""Routes (routing classes with queued work) read per answer: the first in dispatch order (best head first)."""
_TERMINAL = ("done", "failed", "canceled")


class RouteStats(msgspec.Struct, rename="camel", kw_only=True):
    route: str
    """The routing class: `a:<agent id>` for pinned tasks, `c:<hash>` for a capability set."""
    pinned_agent_id: str | None
    capabilities: list[str]
    depth: int
    by_priority: dict[str, int]
    """Queued tasks per priority ("0".."9"), only the non-empty ones."""
    oldest_age_s: float | None
    """Seconds since the oldest queued task of this route was submitted."""


class MinuteStats(msgspec.Struct, rename="camel", kw_only=True):
    start: dt.datetime
    done: int
    failed: int
    canceled: int


class QueueStats(msgspec.Struct, rename="camel", kw_only=True):
    at: dt.datetime
    depth: int
    """Queued tasks across every route (dispatchable now)."""
    scheduled: int
    """Tasks waiting for their run time or a retry backoff (not yet in a queue)."""
    by_priority: dict[str, int]
    routes: list[RouteStats]
    routes_truncated: bool
    throughput: list[MinuteStats]
    """Tasks that ended per minute over the last `minutes`, oldest first."""


class _Route(NamedTuple):
    route: str
    info: dict[str, Any]
    """`{"pin": agent id or "", "caps": [...]}` as the scheduler registered it."""
    depths: list[int]
    """Queued tasks per priority 0..9."""
    heads: list[str]
    """The longest-waiting task id of each non-empty priority band."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _routes(redis: redis.asyncio.Redis, keys: Keys) -> tuple[list[_Route], bool, int]:
    """The queued routes, whether there were more than `MAX_ROUTES`, and the count of scheduled tasks."""
    routes = [_text(r) for r in await redis.zrange(keys.queues(), 0, MAX_ROUTES)]
    truncated = len(routes) > MAX_ROUTES
    routes = routes[:MAX_ROUTES]
    scheduled = int(await redis.zcard(keys.delayed()))
    if not routes:
        return [], truncated, scheduled
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(keys.routes(), routes)
    for route in routes:
        for prio in range(10):
            low = (9 - prio) * 10**14
            pipe.zcount(keys.queue(route), low, f"({low + 10**14}")
            # The band's lowest score is its earliest `ord`: the task that has waited longest at that priority.
            pipe.zrangebyscore(keys.queue(route), low, f"({low + 10**14}", start=0, num=1)
    replies = await pipe.execute()
    described = replies[0]
    out: list[_Route] = []
    for i, route in enumerate(routes):
        band = replies[1 + i * 20 : 1 + (i + 1) * 20]
        depths = [int(band[2 * p]) for p in range(10)]
        heads = [_text(band[2 * p + 1][0]) for p in range(10) if band[2 * p + 1]]
        raw = described[i]
        info = json.loads(raw) if raw else {}
        out.append(_Route(route, info, depths, heads))
    return out, truncated, scheduled


async def _throughput(db: AsyncSession, now: dt.datetime, minutes: int) -> list[MinuteStats]:
    start = (now - dt.timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    edges = [start + dt.timedelta(minutes=m) for m in range(minutes + 1)]
    bucket = case(*((Task.finished_at < edges[m + 1], m) for m in range(minutes)), else_=minutes - 1)
    rows = (
        await db.execute(
            select(bucket, Task.status, func.count())
            .where(Task.status.in_(_TERMINAL), Task.finished_at >= start)
            .group_by(bucket, Task.status)
        )
    ).all()
    counts: dict[tuple[int, str], int] = {(int(b), str(s)): int(n) for b, s, n in rows}
    return [
        MinuteStats(
            start=edges[m],
            done=counts.get((m, "done"), 0),
            failed=counts.get((m, "failed"), 0),
            canceled=counts.get((m, "canceled"), 0),
        )
        for m in range(minutes)
    ]


@get(
    "/api/admin/queues",
    guards=[requires_admin],
    tags=["admin"],
    summary="Queue depth per priority and route, oldest waiting task, recent throughput (admins)",
)
async def queue_stats(
    request: Request[Any, Any, Any],
    db_session: AsyncSession,
    minutes: Annotated[int, Parameter(ge=1, le=60, description="throughput window in minutes")] = 15,
) -> QueueStats:
    """Read-only; the console's queues page reloads it when task statuses change."""
    state = request.app.state
    now = utcnow()
    routes, truncated, scheduled = await _routes(state.redis, Keys(state.settings.redis.prefix))
    heads = [h for r in routes for h in r.heads]
    created: dict[str, dt.datetime] = {}
    if heads:
        rows = (await db_session.execute(select(Task.id, Task.created_at).where(Task.id.in_(heads)))).all()
        created = {tid: at for tid, at in rows}
    by_priority = dict.fromkeys((str(p) for p in range(10)), 0)
    out: list[RouteStats] = []
    for route, info, depths, route_heads in routes:
        for p, n in enumerate(depths):
            by_priority[str(p)] += n
        times = [created[h] for h in route_heads if h in created]
        out.append(
            RouteStats(
                route=route,
                pinned_agent_id=info.get("pin") or None,
                capabilities=list(info.get("caps") or []),
                depth=sum(depths),
                by_priority={str(p): n for p, n in enumerate(depths) if n},
                oldest_age_s=round((now - min(times)).total_seconds(), 3) if times else None,
            )
        )
    return QueueStats(
        at=now,
        depth=sum(by_priority.values()),
        scheduled=scheduled,
        by_priority=by_priority,
        routes=sorted(out, key=lambda r: -r.depth),
        routes_truncated=truncated,
        throughput=await _throughput(db_session, now, minutes),
    )
