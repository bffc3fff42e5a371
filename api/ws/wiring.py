"""What the /ws package adds to the app: its route and its lifespan (fan-out, agent status feed, registry).

`api.wiring` includes `route_handlers()` and `lifespans()`; `app.state.ws` is the `WsRuntime`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from api.ws.agent_session import FrameLanes
from api.ws.agent_status import AgentStatusFeed
from api.ws.endpoint import ws_endpoint
from api.ws.fanout import Fanout
from api.ws.framing import CloseCode
from api.ws.registry import SessionRegistry
from api.ws.runtime import WsRuntime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from litestar import Litestar

    from api.settings import ApiSettings

__all__ = ("lifespans", "route_handlers")

logger = logging.getLogger(__name__)


def route_handlers() -> Sequence[Any]:
    return [ws_endpoint]


@asynccontextmanager
async def _ws_lifespan(app: Litestar) -> AsyncIterator[None]:
    registry = SessionRegistry()
    settings: ApiSettings = app.state.settings
    runtime = WsRuntime(
        registry=registry, lanes=FrameLanes.of(settings.ws.agent_frame_concurrency), on_change=_gauge_hook(app)
    )
    runtime.fanout = Fanout(app.state.redis_blocking, prefix=app.state.settings.redis.prefix, registry=registry)
    await runtime.fanout.start()
    runtime.agent_feed = AgentStatusFeed(
        app.state.scheduler, app.state.db, registry, interval_s=settings.ws.agent_status_interval_s
    )
    runtime.agent_feed.start()
    app.state.ws = runtime
    try:
        yield
    finally:
        registry.close_everything(CloseCode.GOING_AWAY, "server shutting down")
        await runtime.agent_feed.stop()
        await runtime.fanout.stop()


def _gauge_hook(app: Litestar) -> Callable[[str, int], None] | None:
    # `app.state.metrics` (api/metrics.py) is set by the tasks lifespan, which runs before ours.
    metrics = getattr(app.state, "metrics", None)
    if metrics is None:
        return None

    def update(role: str, count: int) -> None:
        metrics.ws_connections.labels(role=role).set(count)

    return update


def lifespans() -> Sequence[Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    return [_ws_lifespan]
