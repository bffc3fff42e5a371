"""Which events the recorder may skip because they are already on their rows: a task's first status (written
with the row at submit) and what this process' result writer noted after its commit."""

from __future__ import annotations

import datetime as dt

from api.tasks.committed import CommittedOutcomes, RecorderShortcut
from api.tasks.history import entry
from scheduler.types import TaskEvent

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def status(task: str, seq: int, value: str, attempt: int, agent: str = "", at_ms: int = 0) -> TaskEvent:
    return TaskEvent(f"{seq}-0", task, "owner", seq, "task/status", value, attempt, agent, at_ms, None, b"{}")


def other(task: str, seq: int, kind: str) -> TaskEvent:
    return TaskEvent(f"{seq}-0", task, "owner", seq, kind, None, 1, "a", 0, None, b"{}")  # type: ignore[arg-type]


def noted(task: str = "t", agent: str = "a", done_seq: int = 4) -> CommittedOutcomes:
    committed = CommittedOutcomes()
    committed.note(
        task,
        done_seq,
        [
            entry(2, "assigned", attempt=1, agent_id=agent, data=None, at=AT),
            entry(3, "running", attempt=1, agent_id=agent, data=None, at=AT),
            entry(done_seq, "done", attempt=1, agent_id=agent, data=None, at=AT),
        ],
    )
    return committed


def quick_run(task: str = "t") -> list[TaskEvent]:
    return [
        status(task, 1, "queued", 0, at_ms=1_000),
        status(task, 2, "assigned", 1, "a", at_ms=1_250),
        status(task, 3, "running", 1, "a"),
        status(task, 4, "done", 1, "a"),
    ]


def test_a_noted_run_is_skipped_with_its_dispatch_latency() -> None:
    keep, skipped, latencies = RecorderShortcut(noted()).split(quick_run())
    assert (keep, skipped) == ([], 4)
    assert latencies == [(("t", 2), 0.25)]


def test_the_wait_is_measured_from_a_queued_event_of_an_earlier_batch() -> None:
    shortcut = RecorderShortcut(noted())
    run = quick_run()
    assert shortcut.split(run[:1]) == ([], 1, [])
    assert shortcut.split(run[1:]) == ([], 3, [(("t", 2), 0.25)])
    # Without it (another replica read the `queued`), the assignment takes the row path, which measures it.
    keep, skipped, latencies = RecorderShortcut(noted()).split(run[1:])
    assert ([e.seq for e in keep], skipped, latencies) == ([2], 2, [])


def test_a_first_status_needs_no_note_but_nothing_else_is_skipped_without_one() -> None:
    keep, skipped, _ = RecorderShortcut(CommittedOutcomes()).split(quick_run())
    assert ([e.seq for e in keep], skipped) == ([2, 3, 4], 1)
    # A seq 1 from an agent or a later attempt is not the submitted one.
    for odd in (status("t", 1, "queued", 1), status("t", 1, "assigned", 0, "a")):
        assert RecorderShortcut(CommittedOutcomes()).split([odd])[1] == 0


def test_progress_before_the_result_is_skipped_but_stream_pieces_never_are() -> None:
    run = quick_run()
    with_progress = [*run[:3], other("t", 4, "task/progress"), status("t", 5, "done", 1, "a")]
    assert RecorderShortcut(noted(done_seq=5)).split(with_progress)[:2] == ([], 5)
    with_piece = [*run[:3], other("t", 4, "task/stream"), status("t", 5, "done", 1, "a")]
    keep, skipped, _ = RecorderShortcut(noted(done_seq=5)).split(with_piece)
    assert ([e.seq for e in keep], skipped) == ([4], 4)


def test_an_event_not_exactly_as_noted_goes_to_the_database() -> None:
    keep, _, _ = RecorderShortcut(noted(agent="b")).split(quick_run())
    assert [e.seq for e in keep] == [2, 3, 4]
    keep, _, _ = RecorderShortcut(noted("t")).split([*quick_run("t"), *quick_run("u")])
    assert [(e.task_id, e.seq) for e in keep] == [("u", 2), ("u", 3), ("u", 4)]


def test_notes_are_bounded_oldest_first() -> None:
    committed = CommittedOutcomes(max_notes=2)
    for task in ("a", "b", "c"):
        committed.note(task, 1, [])
    assert (committed.get("a"), len(committed)) == (None, 2)
    assert committed.get("c") is not None
