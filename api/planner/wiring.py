"""What the planner adds to the app: its routes and its lifespan (`app.state.planner`, a `PlannerRuntime`).

Entered after the /ws lifespan, whose session registry feeds the planner's waiters and session watchers.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from api.planner.applier import JobApplier
from api.planner.controllers import LlmSettingsController, PlannerController
from api.planner.credentials import CredentialSealer
from api.planner.crypto import KeyRing, decode_key
from api.planner.jobs import PlannerJobs
from api.planner.live import SessionFeed
from api.planner.runtime import PlannerRuntime
from api.planner.ssrf import AllowList
from api.planner.waiter import TaskWaiter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from litestar import Litestar

    from api.settings import PlannerSettings

__all__ = ("lifespans", "route_handlers")

logger = logging.getLogger(__name__)


def route_handlers() -> Sequence[Any]:
    return [PlannerController, LlmSettingsController]


@asynccontextmanager
async def planner_lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: PlannerSettings = app.state.settings.planner
    ws = getattr(app.state, "ws", None)
    registry = ws.registry if ws is not None else None
    keys = KeyRing.parse(settings.secrets_key.reveal()) if settings.secrets_key is not None else None
    seal_key = decode_key(settings.llm_seal_key.reveal()) if settings.llm_seal_key is not None else None
    waiter = TaskWaiter(app.state.db, registry, recheck_s=settings.planner_recheck_interval_s)
    runtime = PlannerRuntime(
        settings=settings,
        jobs=PlannerJobs(app.state.db, app.state.scheduler, app.state.auth.limiter, waiter, settings),
        sealer=CredentialSealer(
            app.state.db,
            seal_key=seal_key,
            keys=keys,
            task_types=settings.llm_task_types,
            cache_s=settings.llm_credentials_cache_s,
        ),
        feed=SessionFeed(app.state.db, registry) if registry is not None else None,
        applier=JobApplier(
            app.state.db, interval_s=settings.planner_apply_interval_s, stale_s=settings.planner_stale_job_s
        ),
        keys=keys,
        allow=AllowList.parse(settings.llm_base_url_allowlist),
    )
    if keys is None:
        logger.warning("TASKYARD_API_SECRETS_KEY is not set: users' LLM API keys cannot be stored")
    app.state.planner = runtime
    if ws is not None:  # the /ws sessions reach the planner through these hooks (api.ws.runtime)
        ws.planner_sessions = runtime.feed
        ws.submit_payload = runtime.sealer.submit_payload
    if settings.planner_apply_interval_s > 0:
        runtime.applier.start()
    try:
        yield
    finally:
        await runtime.applier.stop()
        if runtime.feed is not None:
            await runtime.feed.stop()


def lifespans() -> Sequence[Callable[[Litestar], AbstractAsyncContextManager[None]]]:
    return [planner_lifespan]
