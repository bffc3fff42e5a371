"""Batched result/failure writes: many agents' outcomes committed in one transaction.

One writer per process (per sessionmaker), shared by every agent socket. Callers hand over a
prepared row update and wait; the writer gathers whatever is pending, applies it with Core
executemany UPDATEs (no ORM objects) in one transaction, commits, and only then resolves the
callers — so an `ack` still means "committed". On PostgreSQL the rows of one kind go to the database as
one JSON array in one UPDATE (no per-row parameters to build, send and bind); a batch that is one
statement (one kind, each task once: the usual case) runs in autocommit, its own transaction, without the
BEGIN and COMMIT round trips, and on PostgreSQL without a session (`ResultWriter._apply`); so does a batch
of one on SQLite, which keeps the executemany. A failed batch fails every waiter (nothing is acked, agents
resend). Rows are locked in id order (within one statement in
the order the database joins its rows, normally the array's, which is sorted by id), and a deadlock or
serialization failure retries the batch, so the writer, the recorder and `cancel` (all tasks-row first)
cannot lock each other out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from api.db.session import executor_of
from api.tasks.committed import CommittedOutcomes
from api.tasks.outcome_rows import apply_direct, apply_writes, one_statement, retry_on_lock_conflict

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from api.tasks.outcome_rows import Kind

__all__ = ("ResultWriter", "writer_for")

logger = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_PENDING = 20_000
"""Writes waiting for a batch; past it callers wait for room (backpressure on the agents' frames)."""


class ResultWriter:
    """Gathers pending writes and commits them in batches; `write()` returns once its row is committed."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_batch: int = MAX_BATCH,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._sessionmaker = sessionmaker
        bind = sessionmaker.kw.get("bind")
        self._engine: AsyncEngine | None = bind
        self._dialect: str = bind.dialect.name if bind is not None else ""
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: deque[tuple[Kind, dict[str, Any], asyncio.Future[None]]] = deque()
        self._room = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.committed = CommittedOutcomes()
        """Results this writer committed, for the recorder of this process (api/tasks/committed.py)."""

    async def write(self, kind: Kind, params: dict[str, Any]) -> None:
        """Queue one row update and wait for its commit; raises what the batch's transaction raised."""
        while len(self._pending) >= self._max_pending:
            self._room.clear()
            await self._room.wait()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((kind, params, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="result-writer")
        await future

    async def _flush(self) -> None:
        """Runs while anything is pending: what gathered during one commit goes into the next."""
        await asyncio.sleep(0)  # let the other frames of this loop turn join the first batch
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            self._room.set()
            live = [(kind, params) for kind, params, future in batch if not future.done()]
            try:
                if live:
                    done = await self._apply(live)
                    self._note_results(*done.get("result", ([], None)))
            except Exception as exc:  # every waiter of the batch gets it: nothing is acked, agents resend
                logger.warning("result batch of %d not committed", len(live), exc_info=True)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # the flusher itself is cancelled (shutdown): nobody waits forever
                for _, _, future in [*batch, *self._pending]:
                    if not future.done():
                        future.cancel()
                self._pending.clear()
                raise
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _apply(
        self, live: list[tuple[Kind, dict[str, Any]]]
    ) -> dict[Kind, tuple[list[dict[str, Any]], int | None]]:
        """Commit `live`. One UPDATE is atomic by itself, committed when it returns: on PostgreSQL it goes
        straight to the app's `DirectExecutor` (no session: ~1.6 -> ~0.5 ms of CPU per lone result). Should
        that fail, the batch runs once more through a session, which also retries lock conflicts: the UPDATE
        fills only an empty slot, so a statement that did commit before its connection failed matches nothing
        the second time."""
        single = one_statement(live, self._dialect)
        direct = executor_of(self._engine) if single and self._dialect == "postgresql" else None
        if direct is not None:
            try:
                return await apply_direct(direct, live)
            except Exception:
                logger.info("direct result write of %d failed; through a session", len(live), exc_info=True)
        work = functools.partial(apply_writes, writes=live)
        return await retry_on_lock_conflict(self._sessionmaker, work, autocommit=single)

    def _note_results(self, rows: list[dict[str, Any]], changed: int | None) -> None:
        """Tell the recorder which attempts are now whole on their rows. Only when every row of the statement
        matched: one that did not (a replayed result, a row canceled meanwhile) cannot be told apart."""
        if changed != len(rows):
            return
        for params in rows:
            if params["b_seq"] > 0:
                self.committed.note(params["b_id"], params["b_seq"], params["b_change"])


_writers: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], ResultWriter] = weakref.WeakKeyDictionary()


def writer_for(sessionmaker: async_sessionmaker[AsyncSession]) -> ResultWriter:
    """The process' writer for this database (created on first use; its flusher runs only while needed)."""
    writer = _writers.get(sessionmaker)
    if writer is None:
        writer = _writers[sessionmaker] = ResultWriter(sessionmaker)
    return writer
