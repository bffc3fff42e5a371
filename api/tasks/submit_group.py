"""Group commit for keyless single submits: concurrent POSTs share one multi-row INSERT and one enqueue,
which follows their answers (`SubmitGroup`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.exceptions

from api.db.models.tasks import Task
from api.tasks.submit_rows import BATCH_INSERT_SQL, batch_rows_json, new_spec
from api.tasks.views import spec_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.db.session import DirectExecutor
    from scheduler.client import SchedulerClient
    from scheduler.types import TaskSpec

__all__ = ("GROUP_MAX_ROWS", "NEW_ROW_KEYS", "SubmitGroup", "enqueue_committed", "enqueue_specs")

logger = logging.getLogger(__name__)

_REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

# Columns a new row sets; the JSON outcome columns stay out so they are SQL NULL (an empty slot).
NEW_ROW_KEYS = (
    "id",
    "owner_id",
    "type",
    "input",
    "priority",
    "agent_id",
    "capabilities",
    "timeout_s",
    "max_attempts",
    "run_at",
    "idempotency_key",
    "request_hash",
    "status",
    "attempt",
    "seq",
    "created_at",
    "updated_at",
    "history",
)
_JSON_KEYS = frozenset({"input", "capabilities", "history"})
GROUP_MAX_ROWS = 100
"""Most rows one group INSERT carries."""


_ONE_ROW_INSERT = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 - fixed identifiers; values bound
    Task.__tablename__, ", ".join(NEW_ROW_KEYS), ", ".join(["%s"] * len(NEW_ROW_KEYS))
)
"""The INSERT of one new row for `DirectExecutor` (psycopg placeholders, `NEW_ROW_KEYS` order)."""

_GROUP_INSERT = BATCH_INSERT_SQL.replace(":rows", "%s")
"""A group's rows as one INSERT of one JSON parameter, as a batch submit writes them. One statement text
whatever the group's size: psycopg caches its parse of a statement of up to 50 parameters, so the
multi-row VALUES form (18 parameters a row) was parsed again on every group."""


async def enqueue_committed(scheduler: SchedulerClient, tasks: list[Task]) -> None:
    """After the commit. A Redis failure is logged, not raised: the reconciler enqueues the rows."""
    await enqueue_specs(scheduler, [spec_for(t, fresh=True) for t in tasks])


async def enqueue_specs(scheduler: SchedulerClient, specs: list[TaskSpec]) -> None:
    """`enqueue_committed` for specs built without ORM rows (the batch submit's)."""
    if not specs:
        return
    try:
        if len(specs) == 1:
            await scheduler.enqueue(specs[0])
        else:
            await scheduler.enqueue_many(specs)
    except _REDIS_ERRORS:
        logger.warning(
            "enqueue failed after commit; the reconciler will enqueue count=%d first_task_id=%s",
            len(specs),
            specs[0].task_id,
            exc_info=True,
        )


@dataclass(slots=True)
class _Member:
    row: dict[str, Any]
    """The new row's columns (`api.tasks.submit_rows.new_fields`)."""
    input_json: bytes
    answer: asyncio.Future[bool] | None
    """Set when the group's rows are committed and enqueued; None for the submit that runs the flush."""


class SubmitGroup:
    """Group commit for keyless single submits (one per API process), on `DirectExecutor`.

    A submit arriving while no group is being written writes its own row at once (a sequential client
    waits for nothing). Those arriving while one is in flight wait and are written together when it
    ends: one multi-row INSERT (its own transaction). A group INSERT the database refuses is retried row
    by row, so one bad row fails no other; a row that still fails, or every row of a group whose
    connection failed, is reported for its submit to retry alone through a session, with the same task id.

    Each submit is answered once its row is committed; the enqueue follows (`enqueue_soon`), in commit
    order, one script call for whatever committed meanwhile, and overlaps the next group's INSERT. A 2xx
    still means a committed row: were the process to die before the enqueue, the reconciler enqueues the
    row (api/tasks/reconciler.py). A cancel that reaches Redis first leaves a terminal task hash there
    (scheduler/lua/cancel.lua), which the late enqueue finds and skips, so it cannot revive the task.
    """

    def __init__(
        self, direct: DirectExecutor, scheduler: Callable[[], SchedulerClient], *, max_rows: int = GROUP_MAX_ROWS
    ) -> None:
        """`scheduler`: the app's client, looked up per group (the app state's, which tests replace)."""
        self.direct = direct
        self._scheduler = scheduler
        self._max_rows = max_rows
        self._busy = False
        self._waiting: list[_Member] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._to_enqueue: list[TaskSpec] = []
        """Committed rows not yet handed to the scheduler, in commit order."""
        self._enqueuer: asyncio.Task[None] | None = None

    def _params(self, member: _Member) -> list[Any]:
        """One row's INSERT parameters, in `NEW_ROW_KEYS` order."""
        direct, row = self.direct, member.row
        return [
            (direct.json(None, member.input_json) if k == "input" else direct.json(row[k]))
            if k in _JSON_KEYS
            else row[k]
            for k in NEW_ROW_KEYS
        ]

    async def insert(self, row: dict[str, Any], input_json: bytes) -> bool:
        """True once `row` (`new_fields`) is committed (its enqueue follows); False when its INSERT failed.
        `input_json`: the task's input as `prepare` encoded it."""
        if self._busy:
            answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._waiting.append(_Member(row, input_json, answer))
            return await answer
        self._busy = True
        try:
            return (await self._flush([_Member(row, input_json, None)]))[0]
        finally:
            self._next()

    def _next(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        group = self._waiting[: self._max_rows]
        del self._waiting[: self._max_rows]
        flush = asyncio.create_task(self._flush_waiting(group), name="submit-group")
        self._flushes.add(flush)
        flush.add_done_callback(self._flushed)

    def _flushed(self, flush: asyncio.Task[None]) -> None:
        self._flushes.discard(flush)
        self._next()

    async def _flush_waiting(self, group: list[_Member]) -> None:
        committed = [False] * len(group)
        try:
            committed = await self._flush(group)
        finally:  # cancelled (shutdown): each submit falls back to its own session
            for member, ok in zip(group, committed, strict=True):
                if member.answer is not None and not member.answer.done():
                    member.answer.set_result(ok)

    async def _flush(self, group: list[_Member]) -> list[bool]:
        committed = await self._insert(group)
        self.enqueue_soon([new_spec(m.row, m.input_json) for m, ok in zip(group, committed, strict=True) if ok])
        return committed

    def enqueue_soon(self, specs: list[TaskSpec]) -> None:
        """Enqueue committed rows after the current step (the answer) goes out, in the order given here."""
        if not specs:
            return
        self._to_enqueue.extend(specs)
        if self._enqueuer is None:
            self._enqueuer = asyncio.create_task(self._enqueue_pending(), name="submit-enqueue")

    async def _enqueue_pending(self) -> None:
        try:
            while self._to_enqueue:
                specs, self._to_enqueue = self._to_enqueue, []
                try:
                    await enqueue_specs(self._scheduler(), specs)  # logs a Redis failure itself
                except Exception:  # no submit waits on it to see an error: log; the reconciler enqueues
                    logger.exception("enqueue after commit failed count=%d", len(specs))
        finally:
            self._enqueuer = None

    async def drain(self) -> None:
        """Wait until every committed row handed over so far went to the scheduler (shutdown, tests)."""
        while self._enqueuer is not None:
            await asyncio.shield(self._enqueuer)

    async def _insert(self, group: list[_Member]) -> list[bool]:
        try:
            if len(group) == 1:
                await self.direct.execute(_ONE_ROW_INSERT, self._params(group[0]))
            else:
                rows = batch_rows_json([m.row for m in group], [m.input_json for m in group])
                await self.direct.execute(_GROUP_INSERT, [rows])
        except Exception as error:  # the session path (or the next try) decides what it means
            if len(group) == 1:
                logger.warning("direct submit INSERT failed (%s); running it through the session", type(error).__name__)
                return [False]
            if not self.direct.refused(error):  # a connection or pool failure: each retries on its own
                logger.warning("group INSERT of %d rows failed (%s)", len(group), type(error).__name__)
                return [False] * len(group)
            logger.warning("group INSERT of %d rows refused (%s); one by one", len(group), type(error).__name__)
            return [(await self._insert([m]))[0] for m in group]
        return [True] * len(group)
