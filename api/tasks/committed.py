"""What this process has itself committed to task rows, so the recorder can skip the events it already holds.

A quick task's events reach the recorder (held until its result commits, api/tasks/recorder.py) after the
result writer has put the whole attempt on the row in its one UPDATE: `queued` came with the INSERT at submit,
`assigned`, `running` and `done` with the result. Locking and reading those rows only to find nothing to write
was most of the recorder's database work. The result writer notes here what its committed UPDATEs wrote; the
recorder drops a task's events without touching the database when they are exactly that.

Only in-process knowledge, bounded, and only ever a shortcut: a task this process did not finish, a note
evicted or an event not accounted for takes the database path as before. With several API replicas a task's
events are read by whichever replica's recorder the stream hands them to, so the shortcut applies when that is
the replica its agent reported to.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol.status import TaskStatus

if TYPE_CHECKING:
    from scheduler.types import TaskEvent

__all__ = ("CommittedOutcomes", "OutcomeNote", "split_committed")

MAX_NOTES = 50_000
"""Tasks remembered (oldest forgotten first). The recorder reads a task's events within a few hundred ms of
its result when it keeps up; a recorder further behind than this many results just uses the database."""

_FIRST = frozenset({str(TaskStatus.QUEUED), str(TaskStatus.SCHEDULED)})


@dataclass(frozen=True, slots=True)
class OutcomeNote:
    """One committed result: the row's `seq` after it, and its history entries by seq (without their time)."""

    seq: int
    entries: dict[int, tuple[Any, ...]]


class CommittedOutcomes:
    """Bounded task id -> `OutcomeNote`, written after a commit, read by the recorder."""

    def __init__(self, max_notes: int = MAX_NOTES) -> None:
        self._notes: OrderedDict[str, OutcomeNote] = OrderedDict()
        self._max = max_notes

    def note(self, task_id: str, seq: int, entries: list[list[Any]]) -> None:
        """`entries`: the history entries the committed UPDATE holds for this attempt (api/tasks/history.py)."""
        self._notes[task_id] = OutcomeNote(seq, {int(e[0]): _comparable(e) for e in entries})
        self._notes.move_to_end(task_id)
        while len(self._notes) > self._max:
            self._notes.popitem(last=False)

    def get(self, task_id: str) -> OutcomeNote | None:
        return self._notes.get(task_id)

    def __len__(self) -> int:
        return len(self._notes)


def _comparable(entry: list[Any]) -> tuple[Any, ...]:
    """What the recorder compares to tell "already stored" (seq, status, attempt, agent, data): not the clock,
    which differs between the API's copy and the scheduler's."""
    return tuple(entry[:5])


def _covered(event: TaskEvent, note: OutcomeNote) -> bool:
    if event.type == "task/progress":
        return event.seq < note.seq  # only bumps the row's seq, which the result already moved past it
    if event.type != "task/status" or not event.status:
        return False  # `task/stream` pieces are rows of their own
    if event.seq == 1:
        # Written with the row at submit (seq 1, attempt 0, no agent); the status the API chose stays.
        return event.attempt == 0 and not event.agent_id and event.status in _FIRST
    data = {"reason": event.reason} if event.reason else None
    entry = (event.seq, event.status, event.attempt, event.agent_id or None, data)
    return note.entries.get(event.seq) == entry


def split_committed(
    events: list[TaskEvent], committed: CommittedOutcomes
) -> tuple[list[TaskEvent], list[TaskEvent], list[tuple[tuple[str, int], float]]]:
    """(events that still need the database, events already on their rows, dispatch latencies of the latter).

    A task's events are skipped together or not at all, and only when this batch holds its whole sequence
    (every seq from 1 to its result's) and each one is already on the row: then no earlier status of it can
    be missing from what is checked, and its `queued` -> `assigned` time is measured from the batch's own
    events (the scheduler's clock; the database path uses the row's first entry, the API's).
    """
    by_task: dict[str, list[TaskEvent]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    keep: list[TaskEvent] = []
    skipped: list[TaskEvent] = []
    latencies: list[tuple[tuple[str, int], float]] = []
    for task_id, mine in by_task.items():
        note = committed.get(task_id)
        if (
            note is None
            or {e.seq for e in mine} != set(range(1, note.seq + 1))
            or not all(_covered(e, note) for e in mine)
        ):
            keep.extend(mine)
            continue
        skipped.extend(mine)
        latencies.extend(_dispatch_latencies(task_id, mine))
    return keep, skipped, latencies


def _dispatch_latencies(task_id: str, events: list[TaskEvent]) -> list[tuple[tuple[str, int], float]]:
    out = []
    for event in events:
        if event.type != "task/status" or event.status != TaskStatus.ASSIGNED:
            continue
        queued = [e.at_ms for e in events if e.status == TaskStatus.QUEUED and e.seq < event.seq]
        if queued:
            waited = dt.timedelta(milliseconds=event.at_ms - max(queued)).total_seconds()
            out.append(((task_id, event.seq), max(0.0, waited)))
    return out
