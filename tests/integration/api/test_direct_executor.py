"""`DirectExecutor` keeps pooled connections between statements (up to `KEPT_CONNECTIONS`), pings one after an
idle second, and never keeps one whose statement failed (PostgreSQL only: the executor is psycopg's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.db.session import IDLE_PING_S, KEPT_CONNECTIONS, DirectExecutor, create_engine
from api.settings import DatabaseSettings
from protocol.config import Secret


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    if not database_url.startswith("postgresql"):
        pytest.skip("the direct executor is PostgreSQL only")
    engine = create_engine(DatabaseSettings(url=Secret(database_url)))
    yield engine
    await engine.dispose()


def _checkouts(engine: AsyncEngine) -> list[int]:
    seen: list[int] = []

    def checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        seen.append(id(dbapi_conn))

    event.listen(engine.sync_engine, "checkout", checkout)
    return seen


async def _backend_pid(direct: DirectExecutor) -> int:
    kept: Any = direct._kept[-1][0]  # the connection it holds between statements
    return int(kept.driver_connection.info.backend_pid)


async def test_statements_reuse_the_kept_connection_without_a_checkout(engine: AsyncEngine) -> None:
    direct = DirectExecutor(engine)
    checkouts = _checkouts(engine)
    await direct.execute("SELECT %s", [1])
    first = await _backend_pid(direct)
    for n in range(5):
        await direct.execute("SELECT %s", [n])
    assert await _backend_pid(direct) == first
    assert len(checkouts) == 1
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await direct.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # Back in the pool as it was lent: not in autocommit.
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        assert not raw.driver_connection.autocommit


async def test_a_statement_on_the_kept_connection_is_committed_when_it_returns(
    engine: AsyncEngine, database_url: str
) -> None:
    direct = DirectExecutor(engine)
    await direct.execute("CREATE TABLE IF NOT EXISTS direct_executor_check (n int)", [])
    try:
        await direct.execute("SELECT 1", [])  # the statement below runs on the kept connection
        await direct.execute("INSERT INTO direct_executor_check VALUES (%s)", [7])
        other = create_async_engine(database_url)
        try:
            async with other.connect() as conn:
                raw = await conn.exec_driver_sql("SELECT count(*) FROM direct_executor_check WHERE n = 7")
                assert raw.scalar() == 1
        finally:
            await other.dispose()
    finally:
        await direct.execute("DROP TABLE direct_executor_check", [])
        await direct.close()


async def test_a_dead_kept_connection_is_replaced_after_an_idle_ping(engine: AsyncEngine) -> None:
    direct = DirectExecutor(engine)
    await direct.execute("SELECT 1", [])
    kept: Any = direct._kept[-1][0]
    await kept.driver_connection.close()  # as a database restart leaves it
    direct._kept[-1] = (kept, direct._kept[-1][1] - IDLE_PING_S - 1)  # unused over the ping interval
    await direct.execute("SELECT 2", [])  # the ping finds it dead: another connection runs the statement
    assert [fairy is not kept and not fairy.driver_connection.closed for fairy, _ in direct._kept] == [True]
    await direct.close()


async def test_a_failed_statement_does_not_keep_its_connection(engine: AsyncEngine) -> None:
    direct = DirectExecutor(engine)
    await direct.execute("SELECT 1", [])
    kept: Any = direct._kept[-1][0]
    with pytest.raises(psycopg.errors.UndefinedTable):
        await direct.execute("SELECT * FROM no_such_table", [])
    assert direct._kept == []
    assert kept.driver_connection is None or kept.driver_connection.closed  # invalidated
    await direct.execute("SELECT 1", [])
    assert len(direct._kept) == 1
    await direct.close()


async def test_overlapping_statements_keep_a_connection_each(engine: AsyncEngine) -> None:
    """A single submit's INSERT and a result's UPDATE in flight together: after the first overlap neither
    checks a connection out again; past `KEPT_CONNECTIONS` the extra one goes back to the pool."""
    direct = DirectExecutor(engine)
    checkouts = _checkouts(engine)
    for n in range(5):
        await asyncio.gather(*(direct.execute("SELECT %s", [n]) for _ in range(KEPT_CONNECTIONS)))
    assert len(checkouts) == KEPT_CONNECTIONS
    await asyncio.gather(*(direct.execute("SELECT 1", []) for _ in range(KEPT_CONNECTIONS + 1)))
    assert len(checkouts) == KEPT_CONNECTIONS + 1
    assert engine.pool.checkedout() == KEPT_CONNECTIONS  # type: ignore[attr-defined]
    await direct.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
