"""The row updates that record an agent's outcome, and the lock order every writer of task rows keeps.

`apply_writes` applies prepared outcome writes (result, partial output, failure, retry) inside the caller's
transaction: Core UPDATEs, no ORM objects. On PostgreSQL the rows of one kind go to the database as one
JSON array in one UPDATE (no per-row parameters to build, send and bind); SQLite keeps an executemany.
Used by the batching `ResultWriter` (api/tasks/result_writer.py) and by the reconciler. Rows are locked in
id order (within one statement in the order the database joins its rows, normally the array's, which is
sorted by id), and `retry_on_lock_conflict` reruns a transaction that met a deadlock or serialization
failure, so the writer, the recorder and `cancel` (all tasks-row first) cannot lock each other out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import msgspec
from sqlalchemy import (
    BindParameter,
    DateTime,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    case,
    column,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import visitors

from api.db.base import UTCDateTime
from api.db.models.tasks import Task
from api.db.session import AUTOCOMMIT
from api.tasks.history import entry, json_append, json_extend
from protocol.status import TERMINAL_STATUSES, TaskStatus
from scheduler.streams import status_event

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from sqlalchemy import ColumnElement, Table
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
    from sqlalchemy.sql.dml import Update

    from api.db.session import DirectExecutor

__all__ = (
    "Kind",
    "apply_direct",
    "apply_writes",
    "id_among",
    "is_lock_conflict",
    "lock_task_rows",
    "one_statement",
    "retry_on_lock_conflict",
)


logger = logging.getLogger("api.tasks.result_writer")  # its name before the split

Kind = Literal["result", "partial", "failed", "retry"]
"""`result`: a `done` row with its output; `partial`: the output of an attempt canceled while it ran (the row
is or becomes `canceled`); `failed`: the last attempt's error; `retry`: an error, task goes on."""

LOCK_RETRIES = 4

_T = TypeVar("_T")
_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_LOCK_CONFLICT_STATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure

_t = cast("Table", Task.__table__)
_id: BindParameter[str] = bindparam("b_id")
_seq: BindParameter[int] = bindparam("b_seq")
"""The event's seq from the scheduler, or -1 when it gave none (then the row keeps its seq)."""
_now = bindparam("b_now", type_=UTCDateTime())
_attempt: BindParameter[int] = bindparam("b_attempt")
_newer_seq = case((_t.c.seq < _seq, _seq), else_=_t.c.seq)
# The outcome's status change goes onto the row with the outcome, before the agent's ack: once acked,
# Redis is never its only home. Appended only when the row has not reached this seq (the recorder or
# an earlier copy of this write already holds it then).
_with_change = case(
    (_t.c.seq < _seq, json_append(_t.c.history, bindparam("b_change", type_=_t.c.history.type))),
    else_=_t.c.history,
)
# A result also carries the attempt's earlier status events (`assigned`, an implied `running`): with them the
# row gets its whole attempt in this one UPDATE and the recorder, which holds a young task's events until
# then, finds nothing left to write. Entries the row already holds (by seq) are skipped; the others are added
# even when the row's seq is past them (another replica's recorder wrote a later status first), so what the
# writer notes for its recorder (`CommittedOutcomes`) is on the row.
_with_changes = json_extend(_t.c.history, bindparam("b_change", type_=_t.c.history.type))
# Inlined literals: an expanding IN cannot be used with executemany.
_active = _t.c.status.not_in([literal_column(f"'{s}'") for s in _TERMINAL])

# Fill only an empty slot: not yet terminal, or terminal recorded by the recorder without the outcome
# (SQL NULL; a JSON null output is stored as JSON 'null', so it counts as filled).
_STATEMENTS: dict[Kind, Update] = {
    "result": update(_t)
    .where(_t.c.id == _id, or_(_active, and_(_t.c.status == str(TaskStatus.DONE), _t.c.result.is_(None))))
    .values(
        result=bindparam("b_output", type_=_t.c.result.type),
        status=str(TaskStatus.DONE),
        attempt=_attempt,
        assigned_agent_id=bindparam("b_agent"),
        finished_at=func.coalesce(_t.c.finished_at, _now),
        started_at=func.coalesce(_t.c.started_at, bindparam("b_started", type_=UTCDateTime())),
        updated_at=_now,
        seq=_newer_seq,
        history=_with_changes,
    ),
    # Redis already made the task `canceled`; the row may still trail it (the cancel's own commit or the
    # recorder), so it is made canceled here too. Only an empty result slot is filled.
    "partial": update(_t)
    .where(_t.c.id == _id, _t.c.result.is_(None), or_(_active, _t.c.status == str(TaskStatus.CANCELED)))
    .values(
        result=bindparam("b_output", type_=_t.c.result.type),
        status=str(TaskStatus.CANCELED),
        finished_at=func.coalesce(_t.c.finished_at, _now),
        updated_at=_now,
    ),
    "failed": update(_t)
    .where(_t.c.id == _id, or_(_active, and_(_t.c.status == str(TaskStatus.FAILED), _t.c.error.is_(None))))
    .values(
        error=bindparam("b_error", type_=_t.c.error.type),
        status=str(TaskStatus.FAILED),
        attempt=_attempt,
        finished_at=func.coalesce(_t.c.finished_at, _now),
        updated_at=_now,
        seq=_newer_seq,
        history=_with_change,
    ),
    # A retry records the error; the status moves only if this event is newer than the row.
    "retry": update(_t)
    .where(_t.c.id == _id, _active)
    .values(
        error=bindparam("b_error", type_=_t.c.error.type),
        status=case((_t.c.seq < _seq, bindparam("b_status")), else_=_t.c.status),
        attempt=_attempt,
        updated_at=_now,
        seq=_newer_seq,
        history=_with_change,
    ),
}


# PostgreSQL: the same statements, each bound parameter read from the JSON object of its row instead
# (`w.value->>'b_id'`, ...), the rows one JSON array parameter: one statement per kind and batch, whose
# rows PostgreSQL joins by id. A task's row is updated at most once per statement, so a batch holding a
# task twice (a resent outcome) runs its later copies in statements after it (`_rounds`).
_w = func.jsonb_array_elements(sql_cast(bindparam("b_rows", type_=String()), JSONB)).table_valued(
    column("value", JSONB), name="w"
)


def _text(key: str) -> ColumnElement[Any]:
    return _w.c.value.op("->>")(literal_column(f"'{key}'"))


def _json(key: str) -> ColumnElement[Any]:
    # `->` keeps JSON null a JSON value: a null output fills the slot, as in the executemany.
    return _w.c.value.op("->", return_type=JSONB)(literal_column(f"'{key}'"))


_ROW_FIELDS: dict[str, ColumnElement[Any]] = {
    "b_id": _text("b_id"),
    "b_agent": _text("b_agent"),
    "b_status": _text("b_status"),
    "b_attempt": sql_cast(_text("b_attempt"), Integer),
    "b_seq": sql_cast(_text("b_seq"), Integer),
    "b_now": sql_cast(_text("b_now"), DateTime(timezone=True)),
    "b_started": sql_cast(_text("b_started"), DateTime(timezone=True)),
    "b_output": _json("b_output"),
    "b_error": _json("b_error"),
    "b_change": _json("b_change"),
}


# The rows' ids again, as an array the task rows are looked up by: `id = ANY(ARRAY(...))` is an index scan of at
# most that many rows whatever the table's statistics say. Joined by `id = w.value->>'b_id'` alone, PostgreSQL
# sizes the JSON array at 100 rows and, on a young table (statistics not yet caught up) or one of a few thousand
# rows, scans the whole table: measured ~0.25 ms of PostgreSQL CPU per task at 20 rows a statement on 5,000 rows,
# ~0.1 ms with this (docs/benchmarks.md).
_r = func.jsonb_array_elements(sql_cast(bindparam("b_rows", type_=String()), JSONB)).table_valued(
    column("value", JSONB), name="r"
)
_ids = func.array(select(_r.c.value.op("->>")(literal_column("'b_id'"))).scalar_subquery())


def _from_rows(stmt: Update) -> Update:
    def swap(element: Any, **_: Any) -> Any:
        return _ROW_FIELDS[element.key] if isinstance(element, BindParameter) and element.key in _ROW_FIELDS else None

    return cast("Update", visitors.replacement_traverse(stmt, {}, swap)).where(_t.c.id == any_(_ids))


_BULK: dict[Kind, Update] = {kind: _from_rows(stmt) for kind, stmt in _STATEMENTS.items()}
_ROW_ENCODER = msgspec.json.Encoder()


def _rounds(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """`rows` (in id order) as statements with each task at most once, a task's copies in arrival order."""
    rounds: list[list[dict[str, Any]]] = [[]]
    seen: dict[str, int] = {}
    for params in rows:
        n = seen[params["b_id"]] = seen.get(params["b_id"], -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(params)
    return rounds


def _encode_rows(rows: list[dict[str, Any]]) -> str:
    return _ROW_ENCODER.encode([{k: v for k, v in params.items() if k in _ROW_FIELDS} for params in rows]).decode()


def one_statement(writes: Sequence[tuple[Kind, dict[str, Any]]], dialect: str) -> bool:
    """Whether `apply_writes` sends `writes` as one statement (atomic alone: no transaction needed)."""
    if len(writes) == 1:
        return True
    if dialect != "postgresql" or len({kind for kind, _ in writes}) > 1:
        return False
    return len({params["b_id"] for _, params in writes}) == len(writes)


def _with_history_entry(kind: Kind, params: dict[str, Any]) -> dict[str, Any]:
    """`params` plus `b_change`: the status change the scheduler emitted for this outcome (same fields)."""
    if kind == "partial":
        return params
    if "b_change" in params:
        return {"b_started": None} | params if kind == "result" else params
    seq, attempt, now = params["b_seq"], params["b_attempt"], params["b_now"]
    if kind == "result":
        changes, started = _prior_entries(params)
        changes.append(
            entry(seq, str(TaskStatus.DONE), attempt=attempt, agent_id=params.get("b_agent"), data=None, at=now)
        )
        return params | {"b_change": changes, "b_started": started}
    else:
        # `failed` names the agent, a retry does not; both carry the error code as the reason.
        status = str(TaskStatus.FAILED) if kind == "failed" else str(params["b_status"])
        error = params.get("b_error") or {}
        change = entry(
            seq,
            status,
            attempt=attempt,
            agent_id=params.get("b_agent") if kind == "failed" else None,
            data={"reason": error["error"]} if error.get("error") else None,
            at=now,
        )
    return params | {"b_change": [change]}


def _prior_entries(params: dict[str, Any]) -> tuple[list[list[Any]], dt.datetime | None]:
    """History entries of the attempt's earlier status events (`b_prior`, from complete.lua), written as the
    recorder would write them, so it sees them as already there; and when the attempt started running."""
    changes: list[list[Any]] = []
    started = None
    for payload in params.get("b_prior") or ():
        event = status_event(params["b_id"], "", payload)
        if not event.status:
            continue
        at = dt.datetime.fromtimestamp(event.at_ms / 1000, tz=dt.UTC)
        data = {"reason": event.reason} if event.reason else None
        changes.append(entry(event.seq, event.status, attempt=event.attempt, agent_id=event.agent_id, data=data, at=at))
        if event.status == TaskStatus.RUNNING:
            started = at
    return changes, started


def is_lock_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction was rolled back and may simply be rerun."""
    if not isinstance(exc, DBAPIError):
        return False
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return state in _LOCK_CONFLICT_STATES


async def lock_task_rows(conn: AsyncConnection, ids: Sequence[str]) -> set[str]:
    """Lock the rows of `ids` in id order (PostgreSQL; SQLite locks the whole file); returns those that exist.

    Every writer of `tasks` + `task_events` takes the task rows first, in this order, so no two
    transactions wait on each other in a cycle.
    """
    if not ids:
        return set()
    stmt = (
        select(_t.c.id)
        .where(id_among(conn, _t.c.id, sorted(set(ids))))
        .order_by(_t.c.id)
        .with_for_update(key_share=True)
    )
    return set((await conn.execute(stmt)).scalars())


def id_among(conn: AsyncConnection, column: ColumnElement[str], ids: list[str]) -> ColumnElement[bool]:
    """`column IN ids`; on PostgreSQL `= ANY(array)`, one statement text whatever the count (an expanding IN
    is a new text per count, which the driver parses again every time)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("b_ids", ids, type_=ARRAY(String)))
    return column.in_(ids)


async def apply_writes(
    conn: AsyncConnection, writes: Sequence[tuple[Kind, dict[str, Any]]]
) -> dict[Kind, tuple[list[dict[str, Any]], int | None]]:
    """Apply prepared writes inside the caller's transaction (rows locked in id order first).

    Returns, per kind, the rows as written (with their history entries) and how many rows the statement
    changed (None where the driver cannot tell for an executemany).
    """
    by_kind: dict[Kind, list[dict[str, Any]]] = {}
    for kind, params in writes:
        by_kind.setdefault(kind, []).append(_with_history_entry(kind, params))
    if len(by_kind) > 1:
        # One statement (or executemany) in id order already locks in id order; several need the order taken first.
        await lock_task_rows(conn, [p["b_id"] for _, p in writes])
    done: dict[Kind, tuple[list[dict[str, Any]], int | None]] = {}
    bulk = conn.dialect.name == "postgresql"
    for kind, rows in by_kind.items():
        rows.sort(key=lambda p: p["b_id"])  # stable: a task's copies stay in arrival order
        if bulk:
            changed = 0
            for part in _rounds(rows):
                changed += (await conn.execute(_BULK[kind], {"b_rows": _encode_rows(part)})).rowcount
            done[kind] = (rows, changed)
            continue
        result = await conn.execute(_STATEMENTS[kind], rows)
        sane = len(rows) == 1 or conn.dialect.supports_sane_multi_rowcount
        done[kind] = (rows, result.rowcount if sane else None)
    return done


_DIRECT: dict[Kind, tuple[str, dict[str, Any]]] = {}
"""Per kind: its one-statement UPDATE as psycopg text and its fixed parameters (compiled once)."""


async def apply_direct(
    direct: DirectExecutor, writes: Sequence[tuple[Kind, dict[str, Any]]]
) -> dict[Kind, tuple[list[dict[str, Any]], int | None]]:
    """`apply_writes` for writes that are one PostgreSQL statement (`one_statement`), sent as it in autocommit on
    `direct`: no session, connection checkout or Core execution around it (the usual lone result). Same return."""
    kind = writes[0][0]
    rows = sorted((_with_history_entry(kind, params) for _, params in writes), key=lambda p: p["b_id"])
    compiled = _DIRECT.get(kind)
    if compiled is None:
        statement = _BULK[kind].compile(dialect=direct.dialect)
        compiled = _DIRECT[kind] = (str(statement), dict(statement.params))
    sql, fixed = compiled
    return {kind: (rows, await direct.execute(sql, fixed | {"b_rows": _encode_rows(rows)}))}


async def retry_on_lock_conflict(
    sessionmaker: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncConnection], Awaitable[_T]],
    *,
    autocommit: bool = False,
) -> _T:
    """Run `work` in a fresh transaction and commit; rerun it on a deadlock/serialization failure.

    `autocommit`: `work` is one statement, its own transaction, so no BEGIN/COMMIT round trips go around it."""
    for attempt in range(LOCK_RETRIES):
        try:
            async with sessionmaker() as session:
                conn = await (session.connection(execution_options=AUTOCOMMIT) if autocommit else session.connection())
                out = await work(conn)
                await session.commit()
                return out
        except DBAPIError as exc:
            if not is_lock_conflict(exc) or attempt == LOCK_RETRIES - 1:
                raise
            logger.warning("lock conflict, rerunning the transaction (attempt %d)", attempt + 1)
            await asyncio.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")
