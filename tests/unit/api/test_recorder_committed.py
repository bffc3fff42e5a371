"""Which events the recorder may skip because this process' result writer already put them on the row."""

from __future__ import annotations

import datetime as dt

from api.tasks.committed import CommittedOutcomes, split_committed
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


def test_a_whole_noted_run_is_skipped_with_its_dispatch_latency() -> None:
    keep, skipped, latencies = split_committed(quick_run(), noted())
    assert keep == []
    assert [e.seq for e in skipped] == [1, 2, 3, 4]
    assert latencies == [(("t", 2), 0.25)]


def test_progress_between_is_covered_but_stream_pieces_are_not() -> None:
    run = quick_run()
    with_progress = [*run[:3], other("t", 4, "task/progress"), status("t", 5, "done", 1, "a")]
    keep, skipped, _ = split_committed(with_progress, noted(done_seq=5))
    assert (keep, len(skipped)) == ([], 5)
    with_piece = [*run[:3], other("t", 4, "task/stream"), status("t", 5, "done", 1, "a")]
    keep, skipped, _ = split_committed(with_piece, noted(done_seq=5))
    assert (len(keep), skipped) == (5, [])


def test_anything_not_exactly_on_the_row_goes_to_the_database() -> None:
    # No note (another replica finished it), a sequence with a gap, a different agent, an unnoted task.
    assert split_committed(quick_run(), CommittedOutcomes())[1] == []
    assert split_committed(quick_run()[1:], noted())[1] == []
    assert split_committed(quick_run(), noted(agent="b"))[1] == []
    mixed = [*quick_run("t"), *quick_run("u")]
    keep, skipped, _ = split_committed(mixed, noted("t"))
    assert {e.task_id for e in keep} == {"u"}
    assert {e.task_id for e in skipped} == {"t"}


def test_a_first_event_from_an_agent_or_a_later_attempt_is_not_the_submitted_one() -> None:
    run = quick_run()
    assert split_committed([status("t", 1, "queued", 1), *run[1:]], noted())[1] == []
    assert split_committed([status("t", 1, "assigned", 0, "a"), *run[1:]], noted())[1] == []


def test_notes_are_bounded_oldest_first() -> None:
    committed = CommittedOutcomes(max_notes=2)
    for task in ("a", "b", "c"):
        committed.note(task, 1, [])
    assert (committed.get("a"), len(committed)) == (None, 2)
    assert committed.get("c") is not None
