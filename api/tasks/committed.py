"""What this process has itself committed to task rows, so the recorder can skip the events it already holds.

A quick task's events reach the recorder (held until its result commits, api/tasks/recorder.py) after the
result writer has put the whole attempt on the row in its one UPDATE: `queued` came with the INSERT at submit,
`assigned`, `running` and `done` with the result. Locking and reading those rows only to find nothing to write
was most of the recorder's database work. The result writer notes here what its committed UPDATEs wrote; the
recorder acknowledges an event without touching the database when it is exactly that (or is a task's first
status, which submit always writes with the row).

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

from api.tasks._bounded import remember
from protocol.status import TaskStatus

if TYPE_CHECKING:
    from scheduler.types import TaskEvent

__all__ = ("CommittedOutcomes", "OutcomeNote", "RecorderShortcut")

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
        remember(self._notes, task_id, OutcomeNote(seq, {int(e[0]): _comparable(e) for e in entries}), self._max)

    def get(self, task_id: str) -> OutcomeNote | None:
        return self._notes.get(task_id)

    def __len__(self) -> int:
        return len(self._notes)


def _comparable(entry: list[Any]) -> tuple[Any, ...]:
    """What the recorder compares to tell "already stored" (seq, status, attempt, agent, data): not the clock,
    which differs between the API's copy and the scheduler's."""
    return tuple(entry[:5])


def _on_row(event: TaskEvent, note: OutcomeNote | None) -> bool:
    """Whether applying `event` could change nothing: what it would write is already on the row."""
    if event.type == "task/status" and event.seq == 1:
        # Submit commits the row with its first status (seq 1, attempt 0, no agent) before the enqueue that
        # emits this event; no other path emits seq 1. The status the API chose is kept (near `runAt` its
        # clock and the scheduler's may disagree on `queued` against `scheduled`).
        return event.attempt == 0 and not event.agent_id and event.status in _FIRST
    if note is None:
        return False
    if event.type == "task/progress":
        return event.seq < note.seq  # only bumps the row's seq, which the result already moved past it
    if event.type != "task/status" or not event.status:
        return False  # `task/stream` pieces are rows of their own
    data = {"reason": event.reason} if event.reason else None
    entry = (event.seq, event.status, event.attempt, event.agent_id or None, data)
    return note.entries.get(event.seq) == entry


class RecorderShortcut:
    """The recorder's side: which events of a batch are already on their rows, and the dispatch latency of
    the skipped assignments (which the row path would have measured from the row)."""

    def __init__(
        self,
        committed: CommittedOutcomes,
        *,
        max_waiting: int = MAX_NOTES,
    ) -> None:
        self._committed = committed
        self._queued_at: OrderedDict[str, int] = OrderedDict()
        """Task id -> when its latest `queued` event seen by this recorder happened (ms): the start of the
        wait a skipped `assigned` ends (bounded; an assignment without it takes the row path)."""
        self._max_waiting = max_waiting

    def split(self, events: list[TaskEvent]) -> tuple[list[TaskEvent], int, list[tuple[tuple[str, int], float]]]:
        """(events that still need the database, how many were skipped, dispatch latencies of the skipped).

        Each event is judged on its own: one already on its row is skipped, whatever else of its task the batch
        holds (the rest is applied, or was or will be by whichever recorder read it).
        """
        keep: list[TaskEvent] = []
        skipped = 0
        latencies: list[tuple[tuple[str, int], float]] = []
        for event in events:  # stream order, so a task's events come in seq order
            if event.type == "task/status" and event.status == TaskStatus.QUEUED:
                remember(self._queued_at, event.task_id, event.at_ms, self._max_waiting)
            assigned = event.type == "task/status" and event.status == TaskStatus.ASSIGNED
            since = self._queued_at.pop(event.task_id, None) if assigned else None
            if assigned and event.queued_ms is not None:
                since = event.queued_ms  # a first dispatch: its `queued` entry is not in the stream
            if not _on_row(event, self._committed.get(event.task_id)) or (assigned and since is None):
                keep.append(event)  # the row path applies it (and measures an assignment's wait from the row)
                continue
            if since is not None:
                waited = dt.timedelta(milliseconds=event.at_ms - since).total_seconds()
                latencies.append(((event.task_id, event.seq), max(0.0, waited)))
            skipped += 1
        return keep, skipped, latencies
