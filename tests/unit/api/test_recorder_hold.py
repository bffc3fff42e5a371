"""Which events the recorder's loop keeps back for a moment (so a task's changes share one row UPDATE, or
none when its result's write carried them)."""

from __future__ import annotations

import time

from api.tasks.recorder import Recorder, _split_young
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


class _Stream:
    """The scheduler client as the recorder's loop uses it: a stream of events read in batches, acks kept."""

    def __init__(self, events: list[TaskEvent]) -> None:
        self.events = events
        self.acked: list[str] = []

    async def read_events(self, consumer: str, *, block_ms: int, count: int) -> list[TaskEvent]:
        batch, self.events = self.events[:count], self.events[count:]
        return batch

    async def ack_events(self, entry_ids: list[str]) -> None:
        self.acked += entry_ids


class _Sessions:
    """Stands in for the sessionmaker: the recorder only needs one to find its process' result writer."""

    kw: dict[str, object] = {}


async def test_a_burst_of_young_events_that_fills_the_batch_is_still_held() -> None:
    """A burst fills the recorder's whole batch with tasks assigned a moment ago: applied at once, each of their
    rows would be written now and again by its result a moment later. Held, the results' writes carry them."""
    now_ms = int(time.time() * 1000)
    young = [
        TaskEvent(f"{i}-0", f"t{i}", "u", 2, "task/status", "assigned", 1, "a", now_ms, None, b"{}") for i in range(25)
    ]
    stream = _Stream(young)
    recorder = Recorder(stream, _Sessions(), batch_size=10, max_batch=20)  # type: ignore[arg-type]
    applied: list[TaskEvent] = []

    async def apply(events: list[TaskEvent]) -> None:
        applied.extend(events)

    recorder.apply = apply  # type: ignore[method-assign]
    assert await recorder.run_once(hold=True) == 0  # 20 read (a full batch), all young: none applied
    assert applied == []
    assert stream.acked == []
    assert await recorder.run_once(block_ms=0) == 25  # not holding (a drain): the held ones and the rest
    assert [e.task_id for e in applied] == [f"t{i}" for i in range(25)]
