"""The one place the bench reads taskyard's schema: how many tasks PostgreSQL holds as `done` (or ended).

Batch throughput is timed to the results being committed in PostgreSQL, which no public endpoint
reports cheaply enough to poll every 20 ms; everything else the bench learns through REST and /ws.
The connection is the bench's own (`application_name` taskyard-bench): its backend's CPU is not
counted as the system's, and its transactions are subtracted from the system's.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from bench.services import PgDatabase

POLL_S = 0.02
STALL_S = 60.0
DONE = ("done",)
ENDED = ("done", "failed", "canceled")


class DoneCounter:
    """Counts tasks in the given statuses (`done` by default; ENDED: any terminal status)."""

    def __init__(self, db: PgDatabase, statuses: tuple[str, ...] = DONE) -> None:
        self._db = db
        self._statuses = list(statuses)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> DoneCounter:
        self._conn = await psycopg.AsyncConnection.connect(self._db.url, autocommit=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def count(self) -> int:
        if self._conn is None:
            raise RuntimeError("DoneCounter used outside `async with`")
        self._db.own_commits += 1
        query = "SELECT count(*) FROM tasks WHERE status = ANY(%s)"
        row = await (await self._conn.execute(query, (self._statuses,))).fetchone()
        return int(row[0]) if row else 0

    async def wait_for(self, target: int, *, timeout_s: float) -> float:
        """The perf_counter time PostgreSQL first held `target` tasks in the counted statuses.

        Raises TimeoutError after `timeout_s`, or sooner when the count has not moved for STALL_S.
        """
        deadline = time.monotonic() + timeout_s
        last, last_change = -1, time.monotonic()
        while (done := await self.count()) < target:
            now = time.monotonic()
            if done != last:
                last, last_change = done, now
            if now > deadline or now - last_change > STALL_S:
                why = f"after {timeout_s:.0f}s" if now > deadline else f"no progress for {STALL_S:.0f}s"
                raise TimeoutError(f"PostgreSQL holds {done} of {target} tasks {'/'.join(self._statuses)} ({why})")
            await asyncio.sleep(POLL_S)
        return time.perf_counter()
