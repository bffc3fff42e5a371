"""One taskyard system for one mode run: its own redis-server and database, the processes, a logged-in
REST client, the workers, and the meter over all of it; everything stopped and dropped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cpu import group_pids
from bench.meter import Meter
from bench.services import PgDatabase, RedisServer
from bench.ty.rest import RestClient
from bench.ty.stack import REPO_ROOT, StackConfig, TaskyardStack

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from bench.children import Child
    from bench.modes import RunContext


@dataclass
class TySystem:
    stack: TaskyardStack
    rest: RestClient
    db: PgDatabase
    redis: RedisServer
    log_dir: Path
    meter: Meter = field(init=False)
    children: list[Child] = field(default_factory=list)
    """The bench's client processes of this run (metered as `client`, stopped at the end)."""

    def __post_init__(self) -> None:
        def groups(prefix: str) -> Callable[[], list[int]]:
            return lambda: [pid for leader in self.stack.pids(prefix) for pid in group_pids(leader)]

        def clients() -> list[int]:
            return [os.getpid(), *(pid for child in self.children for pid in group_pids(child.pid))]

        self.meter = Meter(
            roles={
                "api": groups("api"),
                "scheduler": groups("scheduler"),
                "workers": groups("worker"),
                "redis": lambda: [self.redis.pid],
                "postgres": self.db.backend_pids,
                "client": clients,
            },
            redis_port=self.redis.port,
            pg=self.db,
        )

    def child_env(self, **extra: str) -> dict[str, str]:
        """Environment of a bench client subprocess (the project's interpreter, this repo importable)."""
        return dict(os.environ, PYTHONPATH=str(REPO_ROOT), **extra)

    def child_argv(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def start_workers(
    system: TySystem, count: int, concurrency: int, agents: list[tuple[str, str]] | None = None
) -> list[str]:
    """`count` worker processes (the built-in types, no capabilities), each its own agent (created here
    unless `agents` gives their (id, token)); their ids once every one is online."""
    agents = agents or [
        await system.rest.create_agent(f"bench-worker-{i}", concurrency=concurrency, capabilities=[])
        for i in range(count)
    ]
    for index, (agent_id, token) in enumerate(agents):
        system.stack.start_worker(index, agent_id, token, concurrency)

    async def all_online() -> bool:
        system.stack.check_alive()
        return all([await system.rest.agent_online(agent_id) for agent_id, _ in agents])

    await wait_for(all_online, timeout_s=60, what="every worker to be online")
    return [agent_id for agent_id, _ in agents]


@contextlib.asynccontextmanager
async def taskyard_system(
    ctx: RunContext,
    log_dir: Path,
    *,
    workers: int,
    concurrency: int,
    env: dict[str, str] | None = None,
    pg_port: int | None = None,
) -> AsyncIterator[TySystem]:
    """A started taskyard (API replicas per `--api-replicas`, a scheduler, `workers` worker processes).

    `pg_port` sends taskyard's database connections through that port (the `sql` mode's counting proxy).
    """
    redis = RedisServer(log_dir).start()
    db = PgDatabase()
    data_dir = Path(tempfile.mkdtemp(prefix="taskyard-bench-data-"))
    db_url = db.sqlalchemy_url
    if pg_port is not None:
        db_url = f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/{db.name}?sslmode=disable"
    stack = TaskyardStack(
        StackConfig(redis_url=redis.url(0), database_url=db_url, log_dir=log_dir, data_dir=data_dir),
        api_replicas=ctx.args.api_replicas,
        extra_env={"TASKYARD_API_PROCESSES": str(ctx.args.api_processes), **(env or {})},
    )
    rest = RestClient(stack.base_url)
    system = TySystem(stack=stack, rest=rest, db=db, redis=redis, log_dir=log_dir)
    try:
        db.create()
        await asyncio.to_thread(stack.prepare)
        await asyncio.to_thread(stack.start_api_and_scheduler)
        await rest.login(stack.config.admin_email, stack.config.admin_password)
        if workers:
            await start_workers(system, workers, concurrency)
        yield system
        stack.check_alive()
    finally:
        for child in system.children:
            await child.stop()
        system.meter.close()
        await rest.aclose()
        await asyncio.to_thread(stack.stop)
        db.drop()
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def setup_text(ctx: RunContext, workers: int, concurrency: int) -> str:
    return (
        f"{ctx.args.api_replicas} API replica(s) x {ctx.args.api_processes} process(es), 1 scheduler, "
        f"{workers} worker processes x concurrency "
        f"{concurrency}, results in PostgreSQL"
    )


def describe(result: dict[str, Any], system: TySystem) -> dict[str, Any]:
    """Stamp a taskyard result with what ran (PostgreSQL version, Redis version)."""
    return {**result, "versions": {"postgresql": system.db.version(), "redis": system.redis.version()}}
