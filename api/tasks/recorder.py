"""The recorder: copies the scheduler's event stream into the database, idempotently.

Every API replica runs one (consumer group `recorder`, one consumer per replica). A batch is applied
in one transaction, then acknowledged: a crash in between replays the batch, which changes nothing
(status changes merge into `tasks.history` by seq, stream rows are `ON CONFLICT DO NOTHING`, a row
moves only forward in `seq` and never out of a terminal status; see api/tasks/recorder_rows.py).
A batch that fails is kept and retried first, so this replica catches up as soon as the database is back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from api.tasks._background import BackgroundLoop
from api.tasks._bounded import remember
from api.tasks.committed import RecorderShortcut
from api.tasks.outcome_rows import id_among, retry_on_lock_conflict
from api.tasks.recorder_rows import (
    EVENTS,
    UPDATE_ROWS,
    dispatch_latencies,
    event_row,
    insert_statement,
    lock_histories,
    merge_statuses,
    row_updates,
)
from api.tasks.result_writer import writer_for
from protocol.status import TERMINAL_STATUSES

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

    from api.metrics import Metrics
    from scheduler.client import SchedulerClient
    from scheduler.types import TaskEvent as SchedulerEvent

__all__ = ("Recorder", "default_consumer_name")

_FINISHED = frozenset(str(s) for s in TERMINAL_STATUSES)

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
"""Most events applied in one transaction when the stream is behind."""
FIRST_RETRY_DELAY_S = 0.05
MAX_RETRY_DELAY_S = 2.0
"""Longest wait between retries of a failed batch: the catch-up starts at most this long after recovery."""
HOLD_MS = 200
"""Longest an unfinished task's events are kept back so its later changes share one row UPDATE: with
`LINGER_MS`, the bound on how long a healthy recorder leaves an event in Redis alone."""
MAX_COUNTED = 65_536
"""Assignments remembered as already counted in the dispatch latency (a replayed batch counts none again)."""
LINGER_MS = 50
"""Pause after a batch that did not fill: how much longer an event waits in Redis alone (the Redis-loss
window, docs/architecture.md) in exchange for fewer row updates per task."""


def _split_young(events: list[SchedulerEvent], cutoff_s: float) -> tuple[list[SchedulerEvent], list[SchedulerEvent]]:
    """(events to apply now, events to hold): a task is held while its oldest event here is newer than
    `cutoff_s` (unix seconds), or, once it finished, while its finishing event is; held tasks keep all
    their events.

    Finished tasks are held too: the result writer commits a result with the attempt's earlier statuses
    within milliseconds of its finishing event, and the recorder applying after it then finds nothing to
    write (one row update per task, not two). A task with `task/stream` pieces is never held: pieces are
    rows anyway, and a replica killed while holding them would leave them out of the history until another
    replica claims them.
    """
    since: dict[str, int] = {}
    finished: dict[str, int] = {}
    streaming: set[str] = set()
    for e in events:
        since[e.task_id] = min(since.get(e.task_id, e.at_ms), e.at_ms)
        if e.type == "task/stream":
            streaming.add(e.task_id)
        elif e.type == "task/status" and e.status in _FINISHED:
            finished[e.task_id] = e.at_ms
    since.update(finished)
    young = {t for t, at_ms in since.items() if t not in streaming and at_ms / 1000 > cutoff_s}
    if not young:
        return events, []
    return [e for e in events if e.task_id not in young], [e for e in events if e.task_id in young]


def default_consumer_name() -> str:
    """Unique per process: `host-pid-random` (a restarted replica is a new consumer)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Recorder(BackgroundLoop):
    """Reads event batches and applies them; `run()` loops until `stop()`."""

    def __init__(
        self,
        scheduler: SchedulerClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        consumer: str | None = None,
        batch_size: int = 200,
        max_batch: int = MAX_BATCH,
        block_ms: int = 1000,
        linger_ms: int = LINGER_MS,
        hold_ms: int = HOLD_MS,
        claim_idle_ms: int = 30_000,
        metrics: Metrics | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._sessionmaker = sessionmaker
        self.consumer = consumer or default_consumer_name()
        self._batch_size = batch_size
        self._max_batch = max(batch_size, max_batch)
        self._block_ms = block_ms
        self._linger_s = linger_ms / 1000
        self._hold_s = hold_ms / 1000
        self._claim_idle_ms = claim_idle_ms
        self._metrics = metrics
        self._unapplied: list[SchedulerEvent] = []
        """The batch being applied, or the last one that failed (retried first)."""
        self._held: list[SchedulerEvent] = []
        """Read but kept back for at most `hold_ms` (see `run_once`); applied with the next batch."""
        self._counted: OrderedDict[tuple[str, int], None] = OrderedDict()
        """Assignments already counted in the dispatch latency (bounded)."""
        self._shortcut = RecorderShortcut(writer_for(sessionmaker).committed)
        """Events already on their rows (a first status, what this process' result writer wrote) skip the database."""
        super().__init__()
        self.name = f"recorder:{self.consumer}"

    async def run_once(self, *, block_ms: int | None = None, hold: bool = False) -> int:
        """Read one batch (more reads while full, up to `max_batch`), apply it, ack it. Returns the count applied.

        A batch that failed (database or Redis down) is kept and retried first, by this replica, on
        the next call: it never waits for `claim_stale`'s idle time. `hold` (the background loop):
        keep back the events of unfinished tasks whose oldest event here is younger than `hold_ms`,
        so their next changes join them and the row is updated once (they stay unacknowledged).
        """
        if self._unapplied:
            events = self._unapplied
            await self._apply_and_ack(events)
            logger.info("recorder applied %d events of a batch that had failed", len(events))
            return len(events)
        wait_ms = self._block_ms if block_ms is None else block_ms
        if self._held:
            wait_ms = min(wait_ms, int(self._hold_s * 1000))
        events = [
            *self._held,
            *await self._scheduler.read_events(self.consumer, block_ms=wait_ms, count=self._batch_size),
        ]
        self._held = []
        more = events
        while len(more) == self._batch_size and len(events) < self._max_batch:
            # Behind: the stream holds more right now, so take it into this transaction.
            more = await self._scheduler.read_events(
                self.consumer, block_ms=0, count=min(self._batch_size, self._max_batch - len(events))
            )
            events.extend(more)
        if hold and self._hold_s > 0:
            # Also when the batch filled: a burst of young events is what holding is for (applied now, their
            # tasks' rows would be updated again by the results a moment later). Events of a real backlog are
            # old, so none of them is held.
            events, self._held = _split_young(events, time.time() - self._hold_s)
        if not events:
            return 0
        await self._apply_and_ack(events)
        return len(events)

    async def _apply_and_ack(self, events: list[SchedulerEvent]) -> None:
        self._unapplied = events
        self._set_unapplied(len(events))
        await self.apply(events)
        await self._scheduler.ack_events([e.entry_id for e in events])
        self._unapplied = []
        self._set_unapplied(0)

    def _set_unapplied(self, n: int) -> None:
        if self._metrics is not None:
            self._metrics.recorder_unapplied.set(n)

    async def claim_stale(self) -> int:
        """Take over events another (crashed) replica read but never acknowledged, apply and ack them."""
        events = await self._scheduler.claim_events_pending(
            self.consumer, min_idle_ms=self._claim_idle_ms, count=self._batch_size
        )
        if not events:
            return 0
        await self.apply(events)
        await self._scheduler.ack_events([e.entry_id for e in events])
        logger.warning("recorder took over %d unacknowledged events", len(events))
        return len(events)

    async def stop(self) -> None:
        """Stop the loop, then apply what it held back (best effort: if that fails the events stay
        unacknowledged, and another replica claims them after `claim_idle_ms`)."""
        await super().stop()
        held, self._held = self._held, []
        if held:
            try:
                await asyncio.wait_for(self._apply_and_ack(held), timeout=10)
            except Exception:
                logger.warning("recorder stopped with %d held events unapplied; they stay pending", len(held))

    async def drain(self, *, max_batches: int = 1000) -> int:
        """Apply everything available now (held events included), without blocking (tests, shutdown)."""
        total = 0
        for _ in range(max_batches):
            n = await self.run_once(block_ms=0)
            if n == 0:
                break
            total += n
        return total

    async def apply(self, events: list[SchedulerEvent]) -> None:
        """Apply one batch in one transaction (rerun on a lock conflict). Safe to call again with the same events.

        Events already on their rows as they are (a first status; what this process' result writer wrote) are
        left out of the transaction (api/tasks/committed.py); a batch of only those touches no row.
        """
        pending, skipped, latencies = self._shortcut.split(events)
        inserted: set[tuple[str, int]] = set()
        if pending:
            inserted, applied_latencies = await retry_on_lock_conflict(
                self._sessionmaker, functools.partial(self._apply_batch, events=pending)
            )
            latencies += applied_latencies
        if self._metrics is not None:
            self._metrics.recorded_events.inc(len(inserted))
            self._metrics.recorder_skipped_events.inc(skipped)
            for key, seconds in latencies:
                if key in self._counted:
                    continue
                remember(self._counted, key, None, MAX_COUNTED)
                self._metrics.dispatch_latency.observe(seconds)

    async def _apply_batch(
        self, conn: AsyncConnection, events: list[SchedulerEvent]
    ) -> tuple[set[tuple[str, int]], list[tuple[tuple[str, int], float]]]:
        # Task rows first, in id order (the order every writer of tasks + task_events uses); their
        # history is read under that lock and written back merged by the one UPDATE per task.
        stored = await lock_histories(conn, [e.task_id for e in events])
        mine = [e for e in events if e.task_id in stored]
        if len(mine) != len(events):
            # Tasks without a row were never accepted through this database (e.g. enqueued
            # by a tool straight into Redis); nothing to record for them.
            logger.debug("recorder skipped %d events of unknown tasks", len(events) - len(mine))
        if not mine:
            return set(), []
        merged, inserted = merge_statuses(mine, stored)
        inserted |= await self._insert_events(conn, [e for e in mine if e.type == "task/stream"])
        updates = row_updates(mine, inserted, merged, stored)
        if updates:
            await conn.execute(UPDATE_ROWS, updates)
        return inserted, dispatch_latencies(mine, merged, stored)

    @staticmethod
    async def _insert_events(conn: AsyncConnection, events: list[SchedulerEvent]) -> set[tuple[str, int]]:
        """Insert the batch's `task/stream` rows; returns the (task_id, seq) pairs that are new.

        With the task rows locked nobody else adds events for these tasks, so the pairs already
        stored can be read first; the insert is then a plain executemany (a short statement the
        driver prepares once, where RETURNING would render one huge VALUES list per batch).
        """
        if not events:
            return set()
        stored = await conn.execute(
            select(EVENTS.c.task_id, EVENTS.c.seq).where(
                id_among(conn, EVENTS.c.task_id, sorted({e.task_id for e in events})),
                EVENTS.c.seq >= min(e.seq for e in events),
            )
        )
        seen = {(str(r[0]), int(r[1])) for r in stored.all()}
        rows: list[dict[str, Any]] = []
        for event in events:
            key = (event.task_id, event.seq)
            if key not in seen:
                seen.add(key)
                rows.append(event_row(event))
        if rows:
            await conn.execute(insert_statement(conn.dialect.name), rows)
        return {(r["task_id"], r["seq"]) for r in rows}

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Loop until stopped. A failed batch is retried at once, then with a backoff capped at
        `MAX_RETRY_DELAY_S` while the database (or Redis) stays down; once it answers, the backlog
        drains in full batches without waiting for anything."""
        delay = FIRST_RETRY_DELAY_S
        loop = asyncio.get_running_loop()
        next_claim = loop.time()
        while self.running:
            try:
                if loop.time() >= next_claim:
                    next_claim = loop.time() + self._claim_idle_ms / 1000
                    await self.claim_stale()
                applied = await self.run_once(hold=True)
                delay = FIRST_RETRY_DELAY_S
                if 0 < applied < self._batch_size and self._linger_s > 0:
                    # Caught up: let the next events gather, so a task's assigned/running/done
                    # usually land in one batch and cost its row one UPDATE instead of three.
                    await self.pause(self._linger_s)
            except Exception:
                self.raise_if_cancelling()
                logger.exception(
                    "recorder batch failed (%d events kept for retry); retrying in %.1f s", len(self._unapplied), delay
                )
                await self.pause(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
