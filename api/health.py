"""Probes: `/healthz` says the process serves; `/readyz` says its database and Redis answer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import get
from litestar.datastructures import State  # noqa: TC002 - Litestar resolves handler hints at runtime
from sqlalchemy import text

from api.errors import ServiceUnavailableError

__all__ = ("healthz", "readyz")

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


@get("/healthz", include_in_schema=False, sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check_database(state: State) -> None:
    async with state.db_engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_redis(state: State) -> None:
    await state.redis.ping()


async def _probe(name: str, check: Any, state: State) -> str:
    try:
        await asyncio.wait_for(check(state), PROBE_TIMEOUT_S)
    except Exception as exc:  # a probe reports any failure of its dependency; it must not raise
        logger.warning("readiness: %s unavailable (%s)", name, type(exc).__name__)
        return "unavailable"
    return "ok"


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> dict[str, str]:
    database, redis = await asyncio.gather(
        _probe("database", _check_database, state), _probe("redis", _check_redis, state)
    )
    checks = {"database": database, "redis": redis}
    if database != "ok" or redis != "ok":
        raise ServiceUnavailableError("not ready", checks)
    return {"status": "ok", **checks}
