"""Run a peer for one mode: its own redis-server, its workers from the peers' venv, client processes.

Runs in the project's venv; the workers and clients run in the peers' venv (`bench.peers.venv`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.children import Child
from bench.cpu import group_pids
from bench.meter import Meter
from bench.peers.common import REPO_ROOT
from bench.procs import Proc
from bench.services import RedisServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from bench.modes import RunContext

WORKER_PROCESSES = 2
DRAMATIQ_THREADS = 8


@dataclass(frozen=True)
class PeerSpec:
    name: str
    setup: str
    """What runs, in one line (printed and in the JSON)."""

    def worker_argvs(self, bin_dir: Path, redis_url: str) -> list[list[str]]:
        repo = str(REPO_ROOT)
        if self.name == "dramatiq":
            return [
                [
                    str(bin_dir / "dramatiq"),
                    "bench.peers.dramatiq_app",
                    "--processes",
                    str(WORKER_PROCESSES),
                    "--threads",
                    str(DRAMATIQ_THREADS),
                    "--path",
                    repo,
                ]
            ]
        if self.name == "taskiq":
            return [
                [
                    str(bin_dir / "taskiq"),
                    "worker",
                    "bench.peers.taskiq_app:broker",
                    "--workers",
                    str(WORKER_PROCESSES),
                    "--app-dir",
                    repo,
                    "--log-level",
                    "WARNING",
                ]
            ]
        if self.name == "celery":
            return [
                [
                    str(bin_dir / "celery"),
                    "-A",
                    "bench.peers.celery_app",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    str(WORKER_PROCESSES),
                    "--loglevel",
                    "WARNING",
                ]
            ]
        if self.name == "rq":
            return [
                [str(bin_dir / "rq"), "worker", "--url", redis_url, "--logging_level", "WARNING", "bench-rq"]
                for _ in range(WORKER_PROCESSES)
            ]
        raise ValueError(self.name)


SPECS = {
    "dramatiq": PeerSpec(
        "dramatiq",
        f"RedisBroker + Results middleware (Redis backend), {WORKER_PROCESSES} processes x {DRAMATIQ_THREADS} "
        "threads (its defaults); sent one by one (no batch enqueue)",
    ),
    "taskiq": PeerSpec(
        "taskiq",
        f"taskiq-redis ListQueueBroker + RedisAsyncResultBackend, {WORKER_PROCESSES} worker processes; "
        "results waited for by polling (taskiq has no blocking wait)",
    ),
    "celery": PeerSpec(
        "celery",
        f"Redis broker + Redis result backend, prefork pool, concurrency {WORKER_PROCESSES}, other settings "
        "default (prefetch x4, ack on receipt); results via its pub/sub result consumer",
    ),
    "rq": PeerSpec(
        "rq",
        f"{WORKER_PROCESSES} `rq worker` processes (one forked work horse per job, its default); results "
        "read from rq's result stream (blocking XREAD)",
    ),
}


@dataclass
class PeerSystem:
    name: str
    python: Path
    redis: RedisServer
    log_dir: Path
    workers: list[Proc] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    meter: Meter = field(init=False)

    def __post_init__(self) -> None:
        def workers() -> list[int]:
            return [pid for proc in self.workers if proc.alive() for pid in group_pids(proc.pid)]

        def clients() -> list[int]:
            return [os.getpid(), *(pid for child in self.children for pid in group_pids(child.pid))]

        self.meter = Meter(
            roles={"workers": workers, "redis": lambda: [self.redis.pid], "client": clients},
            redis_port=self.redis.port,
        )

    @property
    def setup(self) -> str:
        return SPECS[self.name].setup

    def env(self) -> dict[str, str]:
        return dict(os.environ, BENCH_REDIS_URL=self.redis.url(0), PYTHONPATH=str(REPO_ROOT))

    def client(self, action: str, params: dict[str, Any], index: int = 0) -> Child:
        """A client process (not started) running `action` with `params`."""
        argv = [str(self.python), "-m", "bench.peers.client", "--peer", self.name, "--action", action]
        child = Child(
            f"{self.name}-client-{index}",
            [*argv, "--params", json.dumps(params)],
            env=self.env(),
            cwd=REPO_ROOT,
            log_path=self.log_dir / f"{self.name}-client-{index}.log",
        )
        self.children.append(child)
        return child


@contextlib.asynccontextmanager
async def peer_system(ctx: RunContext, name: str, log_dir: Path) -> AsyncIterator[PeerSystem]:
    """A peer's workers on a fresh redis-server; workers and clients stopped on the way out."""
    python = ctx.peers_python[name]
    redis = RedisServer(log_dir).start()
    system = PeerSystem(name=name, python=python, redis=redis, log_dir=log_dir)
    try:
        for i, argv in enumerate(SPECS[name].worker_argvs(python.parent, redis.url(0))):
            proc = Proc(f"{name}-workers-{i}", argv, log_path=log_dir / f"{name}-workers-{i}.log", env=system.env())
            system.workers.append(proc.start())
        yield system
        for proc in system.workers:
            proc.check_alive()
    finally:
        for child in system.children:
            await child.stop()
        for proc in system.workers:
            proc.stop(timeout_s=10)
        system.meter.close()
        redis.stop()


async def peer_action(
    ctx: RunContext,
    name: str,
    log_dir: Path,
    action: str,
    params: list[dict[str, Any]],
    *,
    units: int,
    unit: str,
    timeout_s: float,
) -> dict[str, Any]:
    """One measured action on a fresh peer, one client process per `params` entry.

    Returns {"results": [raw per client], "cost": ..., "versions": ..., "setup": ...}.
    """
    from bench.children import measured

    async with peer_system(ctx, name, log_dir) as peer:
        children = [peer.client(action, p, i) for i, p in enumerate(params)]
        results, cost, readies = await measured(children, peer.meter, units=units, unit=unit, timeout_s=timeout_s)
        return {"results": results, "cost": cost, "versions": readies[0], "setup": peer.setup}
