"""A task's recorded history: status changes on the task row, stream pieces in `task_events`.

Why on the row: a task's status changes are written by whoever already updates that row (submit's
INSERT, the recorder's per-task UPDATE, the result writer's terminal UPDATE, cancel), so keeping
them there costs no extra row per change. `task/stream` pieces (LLM output, every piece must stay
replayable) are still rows in `task_events`, inserted in bulk per recorder batch; `task/progress`
is not kept in the database at all (Redis replays it, bounded). Rows written before the `history`
column existed keep everything in `task_events`; readers merge both, newest source winning per seq.

Entry layout (a JSON array, compact on purpose): `[seq, status, attempt, agent_id, data, at_ms]`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import JSON

from api.db.models.tasks import TaskEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.sql.compiler import SQLCompiler

    from api.db.models.tasks import Task

__all__ = ("entry", "events_of", "json_append", "json_extend", "merge", "read_events")


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def entry(
    seq: int, status: str, *, attempt: int, agent_id: str | None, data: dict[str, Any] | None, at: dt.datetime
) -> list[Any]:
    """One status change as stored in `tasks.history`."""
    return [seq, status, attempt, agent_id or None, data or None, _ms(at)]


def merge(stored: list[list[Any]] | None, new: list[list[Any]]) -> list[list[Any]]:
    """`stored` with `new` folded in: one entry per seq (the new one wins: the recorder's copy of an
    event carries its reason), ordered by seq."""
    by_seq = {int(e[0]): e for e in stored or () if isinstance(e, list) and e}
    for e in new:
        by_seq[int(e[0])] = e
    return [by_seq[s] for s in sorted(by_seq)]


class json_append(FunctionElement[Any]):  # noqa: N801 - reads as the SQL function it renders
    """`history` with one entry appended, in SQL (no read first), on PostgreSQL and SQLite.

    Takes the column and a bound one-element list `[entry]`; a NULL history becomes `[entry]`.
    """

    type = JSON()
    inherit_cache = True
    name = "json_append"


@compiles(json_append, "postgresql")
def _append_pg(element: json_append, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = list(element.clauses)
    return (
        f"(COALESCE({compiler.process(column, **kw)}, '[]'::jsonb) || CAST({compiler.process(value, **kw)} AS jsonb))"
    )


@compiles(json_append, "sqlite")
def _append_sqlite(element: json_append, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = list(element.clauses)
    col, val = compiler.process(column, **kw), compiler.process(value, **kw)
    return f"json_insert(COALESCE({col}, '[]'), '$[#]', json(json_extract({val}, '$[0]')))"


class json_extend(FunctionElement[Any]):  # noqa: N801 - reads as the SQL function it renders
    """`history` with the entries of a bound list added, in SQL, skipping those whose seq the history already
    holds (the result writer's copies of events a recorder may have written first), ordered by seq.

    By presence, not by the row's `seq`: with several API replicas one recorder may have put a later status
    on the row while another still holds an earlier one; the earlier entry is added, not dropped (the
    result writer's note tells its recorder the whole attempt is on the row).

    Takes the history column and the bound list of entries.
    """

    type = JSON()
    inherit_cache = True
    name = "json_extend"


@compiles(json_extend, "postgresql")
def _extend_pg(element: json_extend, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    # Only compiled clauses are spliced in (a column, a bound parameter): no value reaches the SQL text.
    stored = f"jsonb_array_elements(COALESCE({column}, '[]'::jsonb))"
    return (
        f"(SELECT COALESCE(jsonb_agg(y.e ORDER BY (y.e->>0)::bigint), '[]'::jsonb) FROM ("  # noqa: S608
        f"SELECT h.e FROM {stored} AS h(e) UNION ALL "
        f"SELECT x.e FROM jsonb_array_elements(CAST({value} AS jsonb)) AS x(e) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {stored} AS o(e) WHERE o.e->>0 = x.e->>0)) AS y)"
    )


@compiles(json_extend, "sqlite")
def _extend_sqlite(element: json_extend, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    stored = f"json_each(COALESCE({column}, '[]'))"
    both = (
        f"SELECT h.value AS v, json_extract(h.value, '$[0]') AS s FROM {stored} AS h UNION ALL "  # noqa: S608
        f"SELECT n.value, json_extract(n.value, '$[0]') FROM json_each({value}) AS n "
        f"WHERE NOT EXISTS (SELECT 1 FROM {stored} AS o "
        f"WHERE json_extract(o.value, '$[0]') = json_extract(n.value, '$[0]'))"
    )
    return f"(SELECT json_group_array(json(v)) FROM ({both} ORDER BY s))"  # noqa: S608


def events_of(task: Task) -> list[TaskEvent]:
    """The row's status entries as (unsaved) event objects, oldest first."""
    out: list[TaskEvent] = []
    for e in task.history or ():
        if not isinstance(e, list) or len(e) < 6:
            continue
        seq, status, attempt, agent_id, data, at_ms = e[:6]
        out.append(
            TaskEvent(
                task_id=task.id,
                seq=int(seq),
                type="task/status",
                status=str(status),
                attempt=int(attempt),
                agent_id=agent_id,
                data=data,
                at=dt.datetime.fromtimestamp(int(at_ms) / 1000, tz=dt.UTC),
            )
        )
    return out


async def read_events(
    session: AsyncSession,
    task: Task,
    *,
    after_seq: int = 0,
    before_seq: int | None = None,
    limit: int,
    newest: bool = False,
) -> list[TaskEvent]:
    """The task's recorded events with `after_seq < seq < before_seq`, oldest first, at most `limit`.

    `newest`: the last `limit` of them (the task view), else the first (a replay).
    """
    query = select(TaskEvent).where(TaskEvent.task_id == task.id, TaskEvent.seq > after_seq)
    if before_seq is not None:
        query = query.where(TaskEvent.seq < before_seq)
    query = query.order_by(TaskEvent.seq.desc() if newest else TaskEvent.seq).limit(limit)
    by_seq = {e.seq: e for e in (await session.scalars(query)).all()}
    for e in events_of(task):
        if e.seq > after_seq and (before_seq is None or e.seq < before_seq):
            by_seq[e.seq] = e  # the row's copy is newer than a legacy event row of the same seq
    ordered = [by_seq[s] for s in sorted(by_seq)]
    return ordered[-limit:] if newest else ordered[:limit]
