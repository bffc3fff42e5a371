"""What the recorder writes for a batch: the per-task row UPDATE, the merged status history, and the
`task/stream` rows. Split from api/tasks/recorder.py (which owns reading, retrying and acking).

Every statement moves a row only forward in `seq` and never out of a terminal status, so a replayed
batch changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec
from sqlalchemy import and_, bindparam, case, func, literal_column, null, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from api.db.base import UTCDateTime
from api.db.models.tasks import Task, TaskEvent
from api.tasks import history
from api.tasks.outcome_rows import id_among
from protocol.status import TERMINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    from sqlalchemy import BindParameter, Table
    from sqlalchemy.ext.asyncio import AsyncConnection
    from sqlalchemy.sql.dml import Insert, Update

    from scheduler.types import TaskEvent as SchedulerEvent

__all__ = (
    "EVENTS",
    "UPDATE_ROWS",
    "dispatch_latencies",
    "event_row",
    "insert_statement",
    "lock_histories",
    "merge_statuses",
    "row_updates",
)

_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_WAITING = (str(TaskStatus.QUEUED), str(TaskStatus.SCHEDULED))
_PAYLOAD_KEYS = {"task/progress": ("data", "message"), "task/stream": ("offset", "delta")}
"""The payload fields an event row keeps in `data`, per event type."""


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _event_data(event: SchedulerEvent) -> dict[str, Any] | None:
    keys = _PAYLOAD_KEYS.get(event.type)
    if keys is not None:
        try:
            payload = msgspec.json.decode(event.payload_json)
        except msgspec.DecodeError:
            return None
        if not isinstance(payload, dict):
            return None
        return {k: payload[k] for k in keys if k in payload}
    return {"reason": event.reason} if event.reason else None


def event_row(event: SchedulerEvent) -> dict[str, Any]:
    return {
        "task_id": event.task_id,
        "seq": event.seq,
        "type": event.type,
        "status": event.status if event.type == "task/status" else None,
        "attempt": event.attempt,
        "agent_id": event.agent_id or None,
        "data": _event_data(event),
        "at": _at(event.at_ms),
    }


@dataclass(slots=True)
class _RowUpdate:
    """One task's net change from a batch: its newest event, and its newest status event."""

    task_id: str
    seq: int = -1
    at: dt.datetime | None = None
    status: SchedulerEvent | None = None
    running_at: dt.datetime | None = None
    failed: SchedulerEvent | None = None

    def add(self, event: SchedulerEvent, new: bool) -> bool:
        """Fold in the next event (in seq order); False once the task has reached a terminal status."""
        at = _at(event.at_ms)
        self.seq, self.at = event.seq, at
        if event.type != "task/status" or not event.status:
            return True
        self.status = event
        if event.status == TaskStatus.RUNNING and new and self.running_at is None:
            # A later event may overtake this one (a result recorded first): the start is kept anyway.
            self.running_at = at
        if event.status == TaskStatus.FAILED:
            self.failed = event
        return event.status not in _TERMINAL

    def params(self) -> dict[str, Any]:
        s = self.status
        status = (s.status or "") if s is not None else ""
        set_agent = s is not None and (bool(s.agent_id) or status in _WAITING)
        # An agent's own error (written by TaskService.record_failure) wins over the bare reason.
        reason = (self.failed.reason or "failed") if self.failed is not None else None
        return {
            "b_id": self.task_id,
            "b_seq": self.seq,
            "b_at": self.at,
            "b_sseq": s.seq if s is not None else -1,
            "b_status": status,
            "b_attempt": s.attempt if s is not None else 0,
            "b_sat": _at(s.at_ms) if s is not None else self.at,
            "b_set_agent": int(set_agent),
            "b_agent": (s.agent_id or None) if s is not None else None,
            "b_terminal": int(status in _TERMINAL),
            "b_running_at": self.running_at,
            "b_has_fail": int(reason is not None),
            "b_fail_error": {"error": reason, "message": reason} if reason is not None else None,
        }


def row_updates(
    events: list[SchedulerEvent],
    inserted: set[tuple[str, int]],
    histories: dict[str, list[list[Any]]],
    stored: dict[str, _Stored],
) -> list[dict[str, Any]]:
    """Per task, the batch's net change, sorted by task id (the lock order); tasks the batch cannot
    change (nothing newer than the row, no new history entry) are left out, so they cost no UPDATE.

    `histories`: the merged `tasks.history` of tasks whose status entries changed in this batch.
    """
    rows: dict[str, _RowUpdate] = {}
    ended: set[str] = set()
    for event in sorted(events, key=lambda e: (e.task_id, e.seq)):
        if event.task_id in ended:
            continue  # a terminal status is never left, so nothing after it in the batch counts
        row = rows.get(event.task_id) or rows.setdefault(event.task_id, _RowUpdate(event.task_id))
        if not row.add(event, (event.task_id, event.seq) in inserted):
            ended.add(event.task_id)
    out = []
    for task_id in sorted(rows):
        params = rows[task_id].params()
        merged = histories.get(task_id)
        if (
            merged is None
            and params["b_seq"] <= stored[task_id].seq
            and params["b_running_at"] is None
            and not params["b_has_fail"]
        ):
            continue
        params["b_new_history"] = int(merged is not None)
        params["b_history"] = merged
        out.append(params)
    return out


def _update_statement() -> Update:
    """One UPDATE per task, applied with executemany: every column moves only under the same guards as
    event-by-event application (the row's seq is older and its status not terminal)."""
    t = cast("Table", Task.__table__)
    active = t.c.status.not_in([literal_column(f"'{s}'") for s in _TERMINAL])  # no expanding IN in executemany
    seq: BindParameter[int] = bindparam("b_seq")
    sseq: BindParameter[int] = bindparam("b_sseq")
    status = bindparam("b_status", type_=t.c.status.type)
    sat = bindparam("b_sat", type_=UTCDateTime())
    fresh = and_(t.c.seq < seq, active)
    fresh_status = and_(t.c.seq < sseq, active)
    has_fail = bindparam("b_has_fail") == 1
    new_history = bindparam("b_new_history") == 1
    return (
        update(t)
        .where(
            t.c.id == bindparam("b_id"),
            or_(
                fresh,
                and_(bindparam("b_running_at", type_=UTCDateTime()).is_not(None), t.c.started_at.is_(None)),
                and_(has_fail, t.c.error.is_(None), t.c.status == str(TaskStatus.FAILED)),
                new_history,
            ),
        )
        .values(
            seq=case((fresh, seq), else_=t.c.seq),
            updated_at=case((fresh, bindparam("b_at", type_=UTCDateTime())), else_=t.c.updated_at),
            status=case((fresh_status, status), else_=t.c.status),
            attempt=case((fresh_status, bindparam("b_attempt")), else_=t.c.attempt),
            assigned_agent_id=case(
                (
                    and_(fresh_status, bindparam("b_set_agent") == 1),
                    bindparam("b_agent", type_=t.c.assigned_agent_id.type),
                ),
                else_=t.c.assigned_agent_id,
            ),
            finished_at=case(
                (and_(fresh_status, bindparam("b_terminal") == 1), func.coalesce(t.c.finished_at, sat)),
                else_=t.c.finished_at,
            ),
            started_at=func.coalesce(
                t.c.started_at,
                bindparam("b_running_at", type_=UTCDateTime()),
                case((and_(fresh_status, status == str(TaskStatus.RUNNING)), sat), else_=null()),
            ),
            error=case(
                (
                    and_(
                        has_fail,
                        t.c.error.is_(None),
                        or_(
                            t.c.status == str(TaskStatus.FAILED),
                            and_(fresh_status, status == str(TaskStatus.FAILED)),
                        ),
                    ),
                    bindparam("b_fail_error", type_=t.c.error.type),
                ),
                else_=t.c.error,
            ),
            # Merged under the row lock taken at the start of the batch, so nothing is lost to a
            # concurrent append (the result writer and cancel wait for the lock).
            history=case((new_history, bindparam("b_history", type_=t.c.history.type)), else_=t.c.history),
        )
    )


UPDATE_ROWS = _update_statement()
_INSERTS: dict[str, Insert] = {}
EVENTS = cast("Table", TaskEvent.__table__)


def insert_statement(dialect: str) -> Insert:
    """`INSERT ... ON CONFLICT (task_id, seq) DO NOTHING`, for executemany (a replay inserts nothing)."""
    stmt = _INSERTS.get(dialect)
    if stmt is None:
        insert_fn = sqlite.insert if dialect == "sqlite" else postgresql.insert
        stmt = _INSERTS[dialect] = insert_fn(EVENTS).on_conflict_do_nothing(index_elements=["task_id", "seq"])
    return stmt


@dataclass(slots=True)
class _Stored:
    seq: int
    history: list[list[Any]] | None
    start: dt.datetime | None
    """When the task became due (run_at or created_at): the start of its first dispatch latency."""


async def lock_histories(conn: AsyncConnection, ids: list[str]) -> dict[str, _Stored]:
    """Lock the task rows in id order (like `lock_task_rows`) and read their history."""
    t = cast("Table", Task.__table__)
    stmt = (
        select(t.c.id, t.c.seq, t.c.history, func.coalesce(t.c.run_at, t.c.created_at))
        .where(id_among(conn, t.c.id, sorted(set(ids))))
        .order_by(t.c.id)
        .with_for_update(key_share=True)
    )
    return {str(r[0]): _Stored(int(r[1]), r[2], r[3]) for r in (await conn.execute(stmt)).all()}


def merge_statuses(
    events: list[SchedulerEvent], stored: dict[str, _Stored]
) -> tuple[dict[str, list[list[Any]]], set[tuple[str, int]]]:
    """Fold the batch's status events into each task's history.

    Returns the merged histories of the tasks that changed, and the (task_id, seq) pairs that were
    not stored before (a replayed batch changes nothing and returns none).
    """
    new: dict[str, list[list[Any]]] = {}
    for event in events:
        if event.type == "task/status" and event.status:
            change = history.entry(
                event.seq,
                event.status,
                attempt=event.attempt,
                agent_id=event.agent_id,
                data=_event_data(event),
                at=_at(event.at_ms),
            )
            new.setdefault(event.task_id, []).append(change)
    merged: dict[str, list[list[Any]]] = {}
    inserted: set[tuple[str, int]] = set()
    for task_id, changes in new.items():
        before = stored[task_id].history or []
        known = {int(e[0]): e for e in before if isinstance(e, list) and e}
        # The same change already stored (by submit, the result writer or cancel, which only differ in
        # their clock) is left alone: rewriting it would cost a row update for nothing.
        fresh = [c for c in changes if known.get(c[0], [])[:5] != c[:5]]
        if not fresh:
            continue
        inserted.update((task_id, c[0]) for c in fresh if c[0] not in known)
        merged[task_id] = history.merge(before, fresh)
    return merged, inserted


def dispatch_latencies(
    events: list[SchedulerEvent], merged: dict[str, list[list[Any]]], stored: dict[str, _Stored]
) -> list[tuple[tuple[str, int], float]]:
    """queued -> assigned of the batch's assignments, keyed by (task id, seq) so the caller counts each once.

    Every assignment of the batch, whether it is new to the row or not: the result writer may have put it
    there first (with its result), so "new to the row" no longer tells a first application from a replay.
    """
    out: list[tuple[tuple[str, int], float]] = []
    for event in events:
        if not (event.type == "task/status" and event.status == TaskStatus.ASSIGNED):
            continue
        if event.queued_ms is not None:
            start: dt.datetime | None = _at(event.queued_ms)  # a first dispatch says when it was queued
        else:
            entries = merged.get(event.task_id) or stored[event.task_id].history or []
            queued = [int(e[5]) for e in entries if e[1] == TaskStatus.QUEUED and int(e[0]) < event.seq]
            start = _at(max(queued)) if queued else stored[event.task_id].start
        if start is None:
            continue
        start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
        out.append(((event.task_id, event.seq), max(0.0, (_at(event.at_ms) - start).total_seconds())))
    return out
