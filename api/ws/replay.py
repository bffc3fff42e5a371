"""History for a watcher's `lastSeq` replay: Redis' bounded per-task history, topped up from the database.

Redis keeps the recent events of live tasks (`scheduler.history`); once it is trimmed or expired,
the older ones from the database (statuses on the task row, stream pieces in `task_events`; progress
is not kept there). The result is in seq order,
without duplicates; whatever neither holds yet (the recorder lags) is simply not there, and the
live fan-out brings newer events anyway.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from api.db.models.tasks import Task
from api.tasks.history import read_events
from api.ws.fanout import event_from_payload
from protocol.envelope import encode_payload
from protocol.messages import TaskProgress, TaskStatusEvent, TaskStream
from protocol.status import TaskStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from api.db.models.tasks import TaskEvent
    from api.ws.events import WatchEvent
    from protocol.messages import Message
    from scheduler.client import SchedulerClient

__all__ = ("MAX_REPLAY", "replay_events")

_KINDS: dict[type[Message], str] = {
    TaskProgress: "task/progress",
    TaskStream: "task/stream",
    TaskStatusEvent: "task/status",
}
MAX_REPLAY = 1000
"""Most events one `subscribe` replays (the agreed bound on history)."""
_STATUSES = frozenset(str(s) for s in TaskStatus)


async def replay_events(
    scheduler: SchedulerClient,
    db: async_sessionmaker[AsyncSession],
    *,
    task_id: str,
    owner_id: str,
    after_seq: int,
) -> list[WatchEvent]:
    """The task's events with seq > `after_seq`, oldest first, at most `MAX_REPLAY`."""
    recent = [
        event_from_payload(e.type, e.task_id, owner_id, e.seq, e.payload_json)
        for e in await scheduler.history(task_id, after_seq, count=MAX_REPLAY)
        if e.seq > after_seq
    ]
    if [e.seq for e in recent] == list(range(after_seq + 1, after_seq + 1 + len(recent))):
        return recent
    # Redis lost some (trimmed or expired progress, a lost history stream, nothing after a rebuild): fill the
    # gaps from SQL, up to the last event Redis has.
    last = recent[-1].seq if recent else None
    stored = await _stored_events(
        db, task_id=task_id, owner_id=owner_id, after_seq=after_seq, before_seq=None if last is None else last + 1
    )
    merged = {e.seq: e for e in stored} | {e.seq: e for e in recent}
    return [merged[seq] for seq in sorted(merged)][:MAX_REPLAY]


async def _stored_events(
    db: async_sessionmaker[AsyncSession], *, task_id: str, owner_id: str, after_seq: int, before_seq: int | None
) -> list[WatchEvent]:
    async with db() as session:
        task = await session.get(Task, task_id)
        if task is None:
            return []
        rows = await read_events(session, task, after_seq=after_seq, before_seq=before_seq, limit=MAX_REPLAY)
    events: list[WatchEvent] = []
    for row in rows:
        message = _message_of(row)
        if message is None:
            continue
        kind = _KINDS[type(message)]
        events.append(event_from_payload(kind, task_id, owner_id, row.seq, encode_payload(message)))
    return events


def _message_of(row: TaskEvent) -> Message | None:
    data = row.data or {}
    if row.type == "task/progress":
        message = data.get("message")
        return TaskProgress(
            task_id=row.task_id,
            attempt=row.attempt,
            data=data.get("data"),
            message=message if isinstance(message, str) else None,
            seq=row.seq,
        )
    if row.type == "task/stream":
        offset, delta = data.get("offset"), data.get("delta")
        if not isinstance(offset, int) or not isinstance(delta, str) or not delta:
            return None
        return TaskStream(task_id=row.task_id, attempt=row.attempt, offset=offset, delta=delta, seq=row.seq)
    if row.type != "task/status" or row.status not in _STATUSES:
        return None
    reason = data.get("reason")
    return TaskStatusEvent(
        task_id=row.task_id,
        seq=row.seq,
        status=TaskStatus(row.status),
        attempt=row.attempt,
        agent_id=row.agent_id,
        at=row.at.astimezone(dt.UTC),
        reason=reason if isinstance(reason, str) else None,
    )
