"""The reconciler: puts back into Redis what the database says Redis should hold.

Runs in every API replica (no leader): every step is idempotent, because `enqueue` ignores a task
Redis already knows, and a result only fills an empty slot. Three jobs:
  (a) Redis came back empty (the epoch marker is gone): rebuild every non-terminal task from the
      database, keeping attempt and seq so fencing and event order continue (an assigned/running task
      numbers on `PROGRESS_MARK_EVERY` above its row: its progress is not all recorded), then mark the epoch.
      Then fill what the rows can tell about the history Redis took with it: a task that finished
      recently without its final status change recorded gets one derived from the row.
  (b) Every interval: re-enqueue recent `queued`/`scheduled` rows Redis does not know (the API
      crashed between its commit and its enqueue).
  (c) Every interval: fill recent `done` rows that have no result from the output Redis kept
      (`P:out:{id}`): the API that applied the result died before its commit, and the agent that
      would resend it may be gone too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import bindparam, select, text, update

from api.db.base import JsonColumn, utcnow
from api.db.models.tasks import Task
from api.tasks import history
from api.tasks._background import BackgroundLoop
from api.tasks._bounded import remember
from api.tasks.outcome_rows import apply_writes
from api.tasks.service import spec_for
from protocol.status import ACTIVE_STATUSES, TERMINAL_STATUSES, TaskStatus
from scheduler.scripts import PROGRESS_MARK_EVERY

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from sqlalchemy import TextClause
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.metrics import Metrics
    from api.tasks.outcome_rows import Kind
    from scheduler.client import SchedulerClient
    from scheduler.types import TaskSpec

__all__ = ("ReconcileResult", "Reconciler")

logger = logging.getLogger(__name__)

_ACTIVE = tuple(str(s) for s in ACTIVE_STATUSES)
_FINISHED = tuple(str(s) for s in TERMINAL_STATUSES)
_WAITING = (str(TaskStatus.QUEUED), str(TaskStatus.SCHEDULED))
_RUNNING = (str(TaskStatus.ASSIGNED), str(TaskStatus.RUNNING))
_RESULT_GRACE = dt.timedelta(seconds=5)
"""A `done` row without its result this long after it finished lost its commit (batches commit in ms)."""
_CHUNK = 500
MAX_KNOWN = 200_000
"""Waiting tasks remembered as known to Redis, so each is asked about once, not every round (oldest
forgotten first: asked again, which costs one EXISTS)."""


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    rebuilt: int | None
    """Tasks enqueued by a rebuild (None: Redis still had its epoch, no rebuild)."""
    reenqueued: int
    """Recent rows Redis did not know, enqueued now."""
    repaired: int = 0
    """`done` rows without a result filled from the output Redis kept."""


def _rebuild_spec(task: Task, now: dt.datetime) -> TaskSpec:
    # Its agent's inbox and slots are gone with Redis: an assigned/running task goes back to the
    # queue and its next dispatch gets attempt + 1, so frames of the old attempt are refused.
    waiting_for_time = task.status == TaskStatus.SCHEDULED and task.run_at is not None and task.run_at > now
    spec = spec_for(task, status=str(TaskStatus.SCHEDULED if waiting_for_time else TaskStatus.QUEUED))
    if task.status in _RUNNING:
        # The row's seq lags the attempt's progress by less than PROGRESS_MARK_EVERY (only every so many
        # progress events reach the recorder): number on above what any watcher may have seen.
        spec = dataclasses.replace(spec, seq=task.seq + PROGRESS_MARK_EVERY)
    return spec


def _lacks_own_status(dialect: str) -> TextClause:
    """SQL for "no entry of the row's history carries its status": the database checks every finished row of
    the window and returns only those. (Every round used to read the whole window's rows, history included,
    into Python: at a sustained rate, the window's thousands of rows every interval, the reconciler's cost
    growing with throughput.) A history that is not an array of entries is returned, for the check below."""
    if dialect == "postgresql":
        return text(
            "NOT COALESCE(jsonb_path_exists(tasks.history, 'strict $[*] ? (@[1] == $s)', "
            "jsonb_build_object('s', tasks.status), true), false)"
        )
    return text(
        "NOT EXISTS (SELECT 1 FROM json_each(tasks.history) AS e "
        "WHERE e.type = 'array' AND json_extract(e.value, '$[1]') = tasks.status)"
    )


class Reconciler(BackgroundLoop):
    """`run_once()` does both jobs; `run()` repeats it every `interval_s` until `stop()`."""

    name = "reconciler"

    def __init__(
        self,
        scheduler: SchedulerClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        interval_s: float = 5.0,
        window_s: float = 600.0,
        grace_s: float = 2.0,
        clock: Callable[[], dt.datetime] = utcnow,
        metrics: Metrics | None = None,
        before_rebuild: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._sessionmaker = sessionmaker
        self._known: OrderedDict[str, None] = OrderedDict()
        """Waiting tasks Redis was found to hold. A task enqueued stays known until Redis loses everything,
        which the rebuild (epoch marker) handles; so a backlog costs one EXISTS per task, not one per round."""
        self._interval_s = interval_s
        self._window = dt.timedelta(seconds=window_s)
        self._grace = dt.timedelta(seconds=grace_s)
        self._clock = clock
        self._metrics = metrics
        self._before_rebuild = before_rebuild
        super().__init__()

    async def rebuild_if_needed(self) -> int | None:
        """Rebuild from the database when the epoch marker is missing; returns the count or None."""
        if await self._scheduler.epoch_present():
            return None
        if self._before_rebuild is not None:
            # Operator holds go back first: no paused task may be dispatched by the requeue below.
            await self._before_rebuild()
        now = self._clock()
        total = 0
        last_id = ""
        async with self._sessionmaker() as session:
            while True:
                # Keyset pages by id: stable while new rows arrive, never loads the table at once.
                page = (
                    (
                        await session.execute(
                            select(Task)
                            .where(Task.status.in_(_ACTIVE), Task.id > last_id)
                            .order_by(Task.id)
                            .limit(_CHUNK)
                        )
                    )
                    .scalars()
                    .all()
                )
                if not page:
                    break
                total += await self._scheduler.enqueue_many([_rebuild_spec(t, now) for t in page])
                last_id = page[-1].id
        filled = await self.fill_derivable_history()
        self._known.clear()
        await self._scheduler.mark_epoch()
        if self._metrics is not None:
            self._metrics.reenqueued_tasks.labels(reason="rebuild").inc(total)
        logger.warning(
            "redis had no epoch marker: rebuilt queues from the database, enqueued=%d history_filled=%d", total, filled
        )
        return total

    async def fill_derivable_history(self) -> int:
        """Give recently finished tasks whose final status change never reached the database one derived
        from the row (status, seq, attempt, agent, finished_at; `data.derived` marks it). Returns how many.

        The result writer and cancel record the final change with the outcome, so this covers what only
        the scheduler decides (e.g. a timeout's `failed`) while its event was still in Redis.
        """
        since = self._clock() - self._window
        filled = 0
        last_id = ""
        async with self._sessionmaker() as session:
            lacks_status = _lacks_own_status(session.get_bind().dialect.name)
            while True:
                page = (
                    await session.execute(
                        select(
                            Task.id,
                            Task.status,
                            Task.seq,
                            Task.attempt,
                            Task.assigned_agent_id,
                            Task.finished_at,
                            Task.history,
                        )
                        .where(
                            Task.status.in_(_FINISHED),
                            Task.finished_at >= since,
                            Task.history.is_not(None),
                            lacks_status,
                            Task.id > last_id,
                        )
                        .order_by(Task.id)
                        .limit(_CHUNK)
                    )
                ).all()
                if not page:
                    break
                last_id = page[-1][0]
                for task_id, status, seq, attempt, agent_id, finished_at, entries in page:
                    if finished_at is None or any(
                        e[1] == status for e in entries or () if isinstance(e, list) and len(e) > 1
                    ):
                        continue
                    change = history.entry(
                        seq, status, attempt=attempt, agent_id=agent_id, data={"derived": True}, at=finished_at
                    )
                    await session.execute(
                        update(Task)
                        .where(Task.id == task_id, Task.status == status)
                        .values(history=history.json_append(Task.history, bindparam("b", [change], type_=JsonColumn)))
                    )
                    filled += 1
            await session.commit()
        return filled

    async def reenqueue_recent(self) -> int:
        """Enqueue recent waiting rows Redis does not know; returns how many.

        Reads ids only, asks Redis about them a chunk at a time, and loads full rows just for the
        missing ones, so a deep backlog costs one indexed scan and a few pipelines per round.
        """
        now = self._clock()
        async with self._sessionmaker() as session:
            ids = list(
                (
                    await session.execute(
                        select(Task.id).where(
                            Task.status.in_(_WAITING),
                            Task.created_at >= now - self._window,
                            Task.created_at <= now - self._grace,
                        )
                    )
                ).scalars()
            )
            ids = [i for i in ids if i not in self._known]
            missing: list[str] = []
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                known = await self._scheduler.known_task_ids(chunk)
                missing.extend(i for i in chunk if i not in known)
                self._remember_known(known)
            if not missing:
                return 0
            added = 0
            for start in range(0, len(missing), _CHUNK):
                rows = (
                    await session.execute(
                        select(Task).where(Task.id.in_(missing[start : start + _CHUNK]), Task.status.in_(_WAITING))
                    )
                ).scalars()
                added += await self._scheduler.enqueue_many([spec_for(t) for t in rows])
        if added:
            if self._metrics is not None:
                self._metrics.reenqueued_tasks.labels(reason="missing").inc(added)
            logger.warning(
                "re-enqueued tasks the database holds but Redis did not (commit without enqueue) count=%d", added
            )
        return added

    def _remember_known(self, ids: Iterable[str]) -> None:
        for task_id in ids:
            remember(self._known, task_id, None, MAX_KNOWN)

    async def repair_results(self) -> int:
        """Fill recent `done` rows that have no result from the output Redis kept; returns how many.

        Bounded by finish time (the last `output_keep_s`): with an index on `finished_at`, a short range scan.
        """
        now = self._clock()
        keep = dt.timedelta(seconds=self._scheduler.settings.output_keep_s)
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Task.id, Task.attempt, Task.assigned_agent_id)
                    .where(
                        Task.status == str(TaskStatus.DONE),
                        Task.result.is_(None),
                        Task.finished_at >= now - keep,
                        Task.finished_at <= now - _RESULT_GRACE,
                    )
                    .limit(_CHUNK)
                )
            ).all()
            kept = await self._scheduler.pending_outputs([row.id for row in rows])
            writes: list[tuple[Kind, dict[str, Any]]] = [
                (
                    "result",
                    {
                        "b_id": row.id,
                        "b_output": msgspec.json.decode(kept[row.id]),
                        "b_attempt": row.attempt,
                        "b_agent": row.assigned_agent_id,
                        "b_now": now,
                        "b_seq": -1,
                    },
                )
                for row in rows
                if row.id in kept
            ]
            if not writes:
                return 0
            await apply_writes(await session.connection(), writes)
            await session.commit()
        logger.warning("filled %d result(s) whose commit was lost, from the output Redis kept", len(writes))
        return len(writes)

    async def run_once(self) -> ReconcileResult:
        rebuilt = await self.rebuild_if_needed()
        reenqueued = await self.reenqueue_recent()
        return ReconcileResult(rebuilt=rebuilt, reenqueued=reenqueued, repaired=await self.repair_results())

    async def run(self) -> None:
        """Loop until stopped; a failed round is logged and retried next interval."""
        while self.running:
            try:
                await self.run_once()
            except Exception:
                self.raise_if_cancelling()
                logger.exception("reconcile round failed; retrying in %.1f s", self._interval_s)
            await self.pause(self._interval_s)
