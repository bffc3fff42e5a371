"""The recorder after a database outage: its failed batch is retried by itself, and the backlog drains
as soon as PostgreSQL answers again, without waiting for the idle claim (set to 10 minutes here).

The outage is real from the recorder's side: its engine connects through a TCP proxy that the test
cuts (every connection dropped, new ones refused) and restores.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from api.db.models.tasks import Task
from api.metrics import Metrics
from api.tasks.recorder import Recorder
from scheduler.types import AgentSpec
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_service_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

WAIT_S = 30.0


class CuttableProxy:
    """A TCP relay to the database that can be cut and restored."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.down = False
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        self.down = True
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def wait_for(predicate: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not await predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_failed_batch_is_retried_at_once_when_the_database_returns(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any, migrated_database_url: str
) -> None:
    if not migrated_database_url.startswith("postgresql"):
        pytest.skip("the outage is simulated on PostgreSQL's TCP port")
    user = env.user()
    capability = f"outage-{uuid.uuid4().hex[:6]}"
    ids = [env.submit(user, {"type": "echo", "capabilities": [capability]})["id"] for _ in range(20)]

    url = make_url(migrated_database_url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    engine = create_async_engine(url.set(host="127.0.0.1", port=proxy.port), pool_pre_ping=True)
    metrics = Metrics()
    recorder = Recorder(
        sched,
        async_sessionmaker(engine, expire_on_commit=False),
        consumer=f"outage-{uuid.uuid4().hex[:6]}",
        block_ms=100,
        claim_idle_ms=600_000,
        metrics=metrics,
    )
    try:
        await recorder.drain()  # the queued events: the stream is caught up before the outage

        proxy.cut()
        await sched.agent_online(AgentSpec(f"agent-{capability}", user.id, (capability,), 20), lease_s=60)
        assert await sched_service.run_until_idle() >= 20  # 20 `assigned` events the database has not seen
        assert await sched.events_backlog() >= 20
        recorder.start()
        await wait_for(lambda: _unapplied(metrics), "a failed batch")

        async def statuses() -> set[str]:
            async with sessionmaker() as session:
                return set((await session.scalars(select(Task.status).where(Task.id.in_(ids)))).all())

        assert await statuses() == {"queued"}

        proxy.restore()
        await wait_for(lambda: _all_assigned(statuses), "the backlog to drain")
        await wait_for(lambda: _applied(metrics), "the unapplied gauge to reach 0 (set after the ack)")
        await wait_for(lambda: _no_backlog(sched), "the backlog metric to reach 0")
    finally:
        await recorder.stop()
        await proxy.close()
        await engine.dispose()


async def _unapplied(metrics: Metrics) -> bool:
    return metrics.recorder_unapplied.collect()[0].samples[0].value > 0


async def _applied(metrics: Metrics) -> bool:
    return metrics.recorder_unapplied.collect()[0].samples[0].value == 0


async def _all_assigned(statuses: Any) -> bool:
    return await statuses() == {"assigned"}


async def _no_backlog(sched: Any) -> bool:
    return await sched.events_backlog() == 0
