"""Engine and session factory for the API process; SQLite gets the pragmas it needs for concurrent use.

Built inside the app lifespan (never at import), so the engine binds to the server's event loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator  # noqa: TC003 - Litestar resolves provider hints at runtime
from typing import TYPE_CHECKING, Any

from litestar.datastructures import State  # noqa: TC002 - Litestar resolves provider hints at runtime
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from api.settings import DatabaseSettings

__all__ = ("AUTOCOMMIT", "IDLE_PING_S", "create_engine", "create_sessionmaker", "provide_db_session")

AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}
"""Execution options for a session whose statements are each their own transaction (no BEGIN/COMMIT round trips)."""
IDLE_PING_S = 1.0
"""A pooled connection idle longer than this is pinged before use; a busier one is not (see `_ping_if_idle`)."""
_CHECKED_IN = "taskyard_checked_in_at"


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An async engine; on SQLite every connection gets WAL, busy_timeout and foreign_keys=ON."""
    url = settings.url.reveal()
    kwargs: dict[str, Any] = {"echo": settings.sql_echo}
    if not _is_sqlite(url):
        kwargs["pool_size"] = settings.db_pool_size
    engine = create_async_engine(url, **kwargs)
    _ping_if_idle(engine)
    if _is_sqlite(url):
        busy_ms = int(settings.sqlite_busy_timeout_ms)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

    return engine


def _ping_if_idle(engine: AsyncEngine) -> None:
    """Ping a connection at checkout only when it sat in the pool over `IDLE_PING_S`.

    `pool_pre_ping` pings on every checkout: one database round trip per request, the most common
    statement a single submit sent. A connection reused within a second is trusted; one that dies
    anyway fails its first statement, which invalidates it and every older pooled connection (the
    submit path retries on a fresh one; other requests answer 503 with Retry-After).
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is None or time.monotonic() - checked_in <= IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:  # any failure: the pool discards it and checks out another
            raise exc.DisconnectionError("pooled connection failed its ping") from error


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request; services commit explicitly, anything left open is rolled back."""
    maker: async_sessionmaker[AsyncSession] = state.db
    async with maker() as session:
        yield session
