"""Engine and session factory for the API process; SQLite gets the pragmas it needs for concurrent use.

Built inside the app lifespan (never at import), so the engine binds to the server's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003 - Litestar resolves provider hints at runtime
from typing import TYPE_CHECKING, Any

from litestar.datastructures import State  # noqa: TC002 - Litestar resolves provider hints at runtime
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from api.settings import DatabaseSettings

__all__ = ("create_engine", "create_sessionmaker", "provide_db_session")


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An async engine; on SQLite every connection gets WAL, busy_timeout and foreign_keys=ON."""
    url = settings.url.reveal()
    kwargs: dict[str, Any] = {"echo": settings.sql_echo, "pool_pre_ping": True}
    if not _is_sqlite(url):
        kwargs["pool_size"] = settings.db_pool_size
    engine = create_async_engine(url, **kwargs)
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


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request; services commit explicitly, anything left open is rolled back."""
    maker: async_sessionmaker[AsyncSession] = state.db
    async with maker() as session:
        yield session
