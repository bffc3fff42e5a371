"""Which events the recorder's loop keeps back for a moment (so a task's changes share one row UPDATE, or
none when its result's write carried them)."""

from __future__ import annotations

from api.tasks.recorder import _split_young
from scheduler.types import TaskEvent

NOW_MS = 1_000_000


def ev(task_id: str, seq: int, status: str | None, age_ms: int) -> TaskEvent:
    return TaskEvent(
        entry_id=f"{seq}-0",
        task_id=task_id,
        owner_id="u",
        seq=seq,
        type="task/status" if status else "task/progress",
        status=status,
        attempt=1,
        agent_id="a",
        at_ms=NOW_MS - age_ms,
        reason=None,
        payload_json=b"{}",
    )


def test_young_tasks_are_held_whole_finished_or_not_and_the_rest_applied() -> None:
    # A finished task is held too: its result's own write (with the attempt's statuses) comes first.
    cutoff_s = (NOW_MS - 200) / 1000
    young = [ev("young", 2, "assigned", 10), ev("young", 3, "running", 5)]
    finished = [ev("done", 2, "assigned", 10), ev("done", 3, "done", 5)]
    old = [ev("old", 2, "assigned", 500), ev("old", 3, None, 1)]  # its oldest event is past the bound
    apply, held = _split_young([*young, *finished, *old], cutoff_s)
    assert held == [*young, *finished]
    assert apply == old


def test_a_finished_task_is_held_by_the_age_of_its_finishing_event() -> None:
    # Assigned long ago (it waited for a free agent), done just now: its result's write comes first.
    cutoff_s = (NOW_MS - 200) / 1000
    events = [ev("slow", 2, "assigned", 900), ev("slow", 3, "running", 800), ev("slow", 4, "done", 5)]
    assert _split_young(events, cutoff_s) == ([], events)


def test_nothing_is_held_when_every_task_waited_long_enough() -> None:
    events = [ev("a", 4, "failed", 300), ev("b", 2, "assigned", 300)]
    assert _split_young(events, (NOW_MS - 200) / 1000) == (events, [])


def test_a_task_with_stream_pieces_is_never_held() -> None:
    piece = ev("s", 3, None, 5)
    piece = TaskEvent(**{**{f: getattr(piece, f) for f in piece.__slots__}, "type": "task/stream"})
    events = [ev("s", 2, "running", 10), piece]
    assert _split_young(events, (NOW_MS - 200) / 1000) == (events, [])
