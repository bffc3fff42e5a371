"""Engine and session factory for the API process; SQLite gets the pragmas it needs for concurrent use.

Built inside the app lifespan (never at import), so the engine binds to the server's event loop.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator  # noqa: TC003 - Litestar resolves provider hints at runtime
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.datastructures import State  # noqa: TC002 - Litestar resolves provider hints at runtime
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import greenlet_spawn

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.engine.interfaces import Dialect
    from sqlalchemy.pool import PoolProxiedConnection

    from api.settings import DatabaseSettings

__all__ = (
    "AUTOCOMMIT",
    "IDLE_PING_S",
    "KEPT_CONNECTIONS",
    "DirectExecutor",
    "create_engine",
    "create_sessionmaker",
    "direct_executor",
    "executor_of",
    "provide_db_session",
)

AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}
"""Execution options for a session whose statements are each their own transaction (no BEGIN/COMMIT round trips)."""
IDLE_PING_S = 1.0
"""A pooled connection idle longer than this is pinged before use; a busier one is not (see `_ping_if_idle`)."""
KEPT_CONNECTIONS = 2
"""Idle connections a `DirectExecutor` keeps: the single submits' INSERT and the result writer's UPDATE (one
statement in flight each at a time, group commit and batching gather the rest) overlap without a checkout."""
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


def _raw(encoded: bytes) -> bytes:
    return encoded


class DirectExecutor:
    """Autocommit statements sent straight to the psycopg connection of a pooled connection.

    For the hottest single statements (a keyless single submit's INSERT, a lone result's UPDATE): no session,
    no Core compilation, no greenlet hop per statement. The executor keeps pooled connections checked out
    and in autocommit between statements (no checkout, checkin, reset or autocommit switch per
    statement); one left unused over `IDLE_PING_S` is pinged before its next statement, as the pool
    pings its own. A statement finding none idle checks one out, kept after it unless `keep` are. Each
    statement is its own transaction (autocommit: no BEGIN/COMMIT round trips), durable when `execute`
    returns. Any failure invalidates the connection (its state is unknown) and is raised as the
    driver's error, for the caller to retry through the session. `close` returns the kept connections.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        import psycopg  # only on the PostgreSQL driver
        from psycopg.types.json import Jsonb

        self._engine = engine
        self._jsonb = Jsonb
        self._refusals = (psycopg.IntegrityError, psycopg.DataError, psycopg.ProgrammingError)
        self._kept: list[tuple[PoolProxiedConnection, float]] = []
        """Idle kept connections with the `time.monotonic()` of their last statement, latest last."""
        self.keep = KEPT_CONNECTIONS
        self.closed = False
        """Set by `close`: statements after it return their connection instead of keeping it."""

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    def refused(self, error: BaseException) -> bool:
        """Whether `error` is the database refusing the statement (a constraint, a bad value), not a
        connection or pool failure."""
        return isinstance(error, self._refusals)

    def json(self, value: Any, encoded: bytes | None = None) -> Any:
        """A JSONB parameter (msgspec-encoded; `encoded` when the caller already has the bytes)."""
        if encoded is not None:
            return self._jsonb(encoded, dumps=_raw)
        return self._jsonb(value, dumps=msgspec.json.encode)

    async def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> int:
        """Run one statement (psycopg placeholders); returns the rows it changed."""
        fairy = await self._connection()
        driver: Any = fairy.driver_connection  # psycopg.AsyncConnection
        try:
            if not driver.autocommit:
                await driver.set_autocommit(True)
            changed: int = (await driver.execute(sql, params)).rowcount
        except BaseException as error:
            await greenlet_spawn(_discard, fairy, error)
            raise
        if len(self._kept) < self.keep and not self.closed:
            self._kept.append((fairy, time.monotonic()))
        else:
            await _release(fairy)
        return changed

    async def _connection(self) -> PoolProxiedConnection:
        """The latest idle kept connection (taken, so a concurrent statement gets another), pinged when it
        sat unused over `IDLE_PING_S`; else one checked out of the pool (which pings its idle ones)."""
        fairy, used = self._kept.pop() if self._kept else (None, 0.0)
        if fairy is not None and time.monotonic() - used > IDLE_PING_S:
            driver: Any = fairy.driver_connection
            try:
                await driver.execute("SELECT 1")
            except Exception as error:  # dead: discard it, the pool's next one is pinged if idle
                await greenlet_spawn(_discard, fairy, error)
                fairy = None
        return fairy if fairy is not None else await self._engine.raw_connection()

    async def close(self) -> None:
        """Return the kept connections to the pool (before the engine is disposed)."""
        self.closed = True
        kept, self._kept = self._kept, []
        for fairy, _ in kept:
            await _release(fairy)


async def _release(fairy: PoolProxiedConnection) -> None:
    """Back to the pool as the pool lent it (not in autocommit); a failure there discards it."""
    driver: Any = fairy.driver_connection
    try:
        await driver.set_autocommit(False)
    except Exception as error:
        await greenlet_spawn(_discard, fairy, error)
        return
    await greenlet_spawn(fairy.close)


def _discard(fairy: PoolProxiedConnection, error: BaseException) -> None:
    fairy.invalidate(error if isinstance(error, Exception) else None)
    fairy.close()


_executors: weakref.WeakValueDictionary[int, DirectExecutor] = weakref.WeakValueDictionary()
"""By `id(engine)`: an executor holds its engine, so the id is not reused while the entry exists."""


def direct_executor(engine: AsyncEngine) -> DirectExecutor | None:
    """A `DirectExecutor` on PostgreSQL through psycopg; None elsewhere (SQLite keeps the session path).

    The app's one per engine: other writers of the process find it with `executor_of` (and share its kept
    connection rather than keep one each)."""
    dialect = engine.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return None
    executor = _executors[id(engine)] = DirectExecutor(engine)
    return executor


def executor_of(engine: AsyncEngine | None) -> DirectExecutor | None:
    """The open `DirectExecutor` `direct_executor` made for `engine`, if any."""
    executor = _executors.get(id(engine))
    return None if executor is None or executor.closed or executor.engine is not engine else executor
