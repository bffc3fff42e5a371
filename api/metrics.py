"""Prometheus metrics of one API replica, in a registry of its own (no process-global state).

`app.state.metrics` holds the `Metrics` object. Gauges read from Redis (task counts included: kept as
tasks change, see scheduler/counts.py; the database is counted only to seed them) are refreshed when
`/metrics` is scraped; counters and histograms are updated where things happen:
`dispatch_latency` by the recorder. `ws_connections` mirrors `app.state.ws.open_connections` at
scrape time (or the WebSocket layer sets `app.state.metrics.ws_connections.labels(role=...)`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from api.task_counts import TaskCounts
from protocol.status import TaskStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from scheduler.client import SchedulerClient

__all__ = ("Metrics", "metrics_endpoint")

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 3.0
# Dispatch is milliseconds when an agent is free and minutes when all are busy.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """Every series this replica exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge(
            "taskyard_queue_depth", "Queued tasks waiting for an agent, per priority (Redis).", ["priority"], registry=r
        )
        self.tasks = Gauge("taskyard_tasks", "Tasks by status (kept in Redis as tasks change).", ["status"], registry=r)
        self.agents_online = Gauge("taskyard_agents_online", "Agents with a live presence lease.", registry=r)
        self.agent_slots_used = Gauge(
            "taskyard_agent_slots_used", "Tasks held by online agents (sum of running).", registry=r
        )
        self.agent_slots_total = Gauge(
            "taskyard_agent_slots_total", "Concurrency offered by online agents (sum).", registry=r
        )
        self.dispatch_latency = Histogram(
            "taskyard_dispatch_latency_seconds",
            "Time from queued to assigned, from recorded events.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ws_connections = Gauge(
            "taskyard_ws_connections", "Open WebSocket connections on this replica.", ["role"], registry=r
        )
        self.recorded_events = Counter(
            "taskyard_recorded_events_total", "Scheduler events applied to the database by this replica.", registry=r
        )
        self.recorder_skipped_events = Counter(
            "taskyard_recorder_skipped_events_total",
            "Scheduler events this replica's recorder found already on their rows (a task's first status, or "
            "written with the result by this replica), acknowledged without a database round trip.",
            registry=r,
        )
        self.recorder_backlog = Gauge(
            "taskyard_recorder_backlog_events",
            "Scheduler events not yet applied to the database by any replica (stream lag + unacknowledged).",
            registry=r,
        )
        self.recorder_unapplied = Gauge(
            "taskyard_recorder_unapplied_events",
            "Events of this replica's current or last failed batch, waiting to be applied.",
            registry=r,
        )
        self.reenqueued_tasks = Counter(
            "taskyard_reconciler_enqueued_total",
            "Tasks the reconciler put back into Redis, by reason.",
            ["reason"],
            registry=r,
        )
        self.scrape_errors = Counter(
            "taskyard_metrics_scrape_errors_total", "Sources that failed during a scrape.", ["source"], registry=r
        )
        for role in ("agent", "client"):
            self.ws_connections.labels(role=role)
        for status in TaskStatus:
            self.tasks.labels(status=str(status))
        for priority in range(10):
            self.queue_depth.labels(priority=str(priority))
        self._counts: TaskCounts | None = None

    async def _refresh_redis(self, scheduler: SchedulerClient) -> None:
        depths = await scheduler.queue_depths()
        for priority, depth in depths.items():
            self.queue_depth.labels(priority=str(priority)).set(depth)
        agents = await scheduler.online_agents()
        self.agents_online.set(len(agents))
        self.agent_slots_used.set(sum(a.running for a in agents))
        self.agent_slots_total.set(sum(a.concurrency for a in agents))
        self.recorder_backlog.set(await scheduler.events_backlog())

    async def _refresh_tasks(self, scheduler: SchedulerClient, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        if self._counts is None:
            self._counts = TaskCounts(scheduler, sessionmaker)
        for status, n in (await self._counts.read()).items():
            self.tasks.labels(status=status).set(n)

    async def refresh(self, scheduler: SchedulerClient | None, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Re-read the gauges; a source that fails keeps its last values and counts a scrape error."""
        sources: list[tuple[str, Any]] = []
        if scheduler is not None:
            sources.append(("redis", self._refresh_redis(scheduler)))
            sources.append(("task_counts", self._refresh_tasks(scheduler, sessionmaker)))
        results = await asyncio.gather(
            *(asyncio.wait_for(coro, SCRAPE_TIMEOUT_S) for _, coro in sources), return_exceptions=True
        )
        for (name, _), result in zip(sources, results, strict=True):
            if isinstance(result, BaseException):
                self.scrape_errors.labels(source=name).inc()
                logger.warning("metrics: %s unavailable during scrape (%s)", name, type(result).__name__)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text format. Aggregates only (counts, no ids), so it is served without a token."""
    state = request.app.state
    metrics: Metrics = state.metrics
    await metrics.refresh(state.scheduler, state.db)
    ws = getattr(state, "ws", None)
    if ws is not None:
        # The WebSocket runtime counts its open sockets; the gauge mirrors it at scrape time.
        for role, count in ws.open_connections.items():
            metrics.ws_connections.labels(role=role).set(count)
    return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)
