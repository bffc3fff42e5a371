"""What the task side adds to the app: route handlers and lifespans (ours, then the WebSocket package's).

`api.app.create_app` registers `route_handlers()` and enters `lifespans()` in order, after its core
lifespan has set `app.state.settings/db/redis/scheduler`. Ours sets `app.state.metrics`,
`app.state.recorder` and `app.state.reconciler`, and runs the last two in the background.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from api.agents.controllers import AgentController
from api.metrics import Metrics, metrics_endpoint
from api.tasks.controllers import TaskController
from api.tasks.reconciler import Reconciler
from api.tasks.recorder import Recorder
from api.ws import wiring as ws_wiring

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from litestar import Litestar

__all__ = ("lifespans", "route_handlers", "tasks_lifespan")

logger = logging.getLogger(__name__)


def route_handlers() -> Sequence[Any]:
    return [AgentController, TaskController, metrics_endpoint, *ws_wiring.route_handlers()]


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
    recorder = Recorder(
        scheduler,
        app.state.db,
        batch_size=settings.recorder_batch_size,
        claim_idle_ms=int(settings.recorder_claim_idle_s * 1000),
        metrics=metrics,
    )
    reconciler = Reconciler(
        scheduler,
        app.state.db,
        interval_s=settings.reconcile_interval_s,
        window_s=settings.reconcile_window_s,
        grace_s=settings.reconcile_grace_s,
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
