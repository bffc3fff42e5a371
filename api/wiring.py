"""How tasks, agents and the WebSocket side compose into the app: route handlers, dependencies, lifespans.

The one place that knows all three, so none of them imports another sideways. `api.app.create_app`
registers `route_handlers()` and `dependencies()` and enters `lifespans()` in order, after its core
lifespan has set `app.state.settings/db/redis/scheduler`. Ours sets `app.state.metrics`,
`app.state.recorder` and `app.state.reconciler`, and runs the last two in the background.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from litestar import Request  # noqa: TC002 - Litestar resolves provider hints at runtime
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - Litestar resolves provider hints at runtime

from api.agents.controllers import AgentController
from api.agents.service import PinnedTasks
from api.metrics import Metrics, metrics_endpoint
from api.ops.holds import restore_holds
from api.tasks.controllers import TaskController
from api.tasks.reconciler import Reconciler
from api.tasks.recorder import Recorder
from api.tasks.service import TaskService
from api.ws import wiring as ws_wiring

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from litestar import Litestar

__all__ = ("dependencies", "lifespans", "route_handlers", "tasks_lifespan")

logger = logging.getLogger(__name__)


def route_handlers() -> Sequence[Any]:
    return [AgentController, TaskController, metrics_endpoint, *ws_wiring.route_handlers()]


def _provide_pinned_tasks(request: Request[Any, Any, Any], db_session: AsyncSession) -> PinnedTasks:
    return PinnedTasks(TaskService(db_session, request.app.state.scheduler).cancel_pinned_to)


def dependencies() -> dict[str, Provide]:
    """`pinned_tasks` for the agent routes: the task service, on the request's session."""
    return {"pinned_tasks": Provide(_provide_pinned_tasks, sync_to_thread=False)}


@asynccontextmanager
async def tasks_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Metrics, then the recorder and the reconciler (each off when its setting says so)."""
    settings = app.state.settings.tasks
    metrics = Metrics()
    app.state.metrics = metrics
    scheduler = app.state.scheduler
    app.state.recorder = None
    app.state.reconciler = None
    if scheduler is None:
        logger.warning("no scheduler client: recorder and reconciler not started")
        yield
        return

    async def restore_operator_holds() -> None:
        async with app.state.db() as session:
            restored = await restore_holds(session, app.state.redis, app.state.settings.redis.prefix)
        if restored:
            logger.warning("redis had lost the operator holds: %d pauses/drains restored from the database", restored)

    reconciler = Reconciler(
        scheduler,
        app.state.db,
        interval_s=settings.reconcile_interval_s,
        window_s=settings.reconcile_window_s,
        grace_s=settings.reconcile_grace_s,
        metrics=metrics,
        before_rebuild=restore_operator_holds,
    )
    recorder = Recorder(
        scheduler,
        app.state.db,
        batch_size=settings.recorder_batch_size,
        claim_idle_ms=int(settings.recorder_claim_idle_s * 1000),
        metrics=metrics,
    )
    app.state.recorder = recorder
    app.state.reconciler = reconciler
    if settings.recorder_enabled:
        recorder.start()
    if settings.reconcile_interval_s > 0:
        reconciler.start()
    try:
        yield
    finally:
        await reconciler.stop()
        await recorder.stop()


def lifespans() -> Sequence[Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    return [tasks_lifespan, *ws_wiring.lifespans()]
