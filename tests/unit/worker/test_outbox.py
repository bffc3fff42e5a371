from __future__ import annotations

from worker.outbox import Outbox, PendingFrame, RecentRefs, SendQueue


def frame(
    fid: str, kind: str = "result", key: tuple[str, int] = ("t1", 1), sent_at: float | None = None
) -> PendingFrame:
    return PendingFrame(frame_id=fid, key=key, kind=kind, data=fid.encode(), sent_at=sent_at)  # type: ignore[arg-type]


def test_acked_result_settles_the_tasks_earlier_frames() -> None:
    outbox = Outbox()
    outbox.add(frame("a", "accept"))
    outbox.add(frame("r", "result"))
    outbox.add(frame("other", "accept", key=("t2", 1)))
    outbox.ack("r")
    assert [f.frame_id for f in outbox.all()] == ["other"]


def test_acked_accept_leaves_the_result_pending() -> None:
    outbox = Outbox()
    outbox.add(frame("a", "accept"))
    outbox.add(frame("r", "result"))
    outbox.ack("a")
    assert [f.frame_id for f in outbox.all()] == ["r"]
    assert outbox.ack("unknown") is None


def test_due_skips_unwritten_recent_and_superseded_accepts() -> None:
    outbox = Outbox()
    outbox.add(frame("old-accept", "accept", sent_at=0.0))
    outbox.add(frame("old-result", "result", sent_at=0.0))
    outbox.add(frame("fresh", "result", key=("t2", 1), sent_at=9.5))
    outbox.add(frame("unwritten", "result", key=("t3", 1)))
    outbox.add(frame("lone-accept", "accept", key=("t4", 1), sent_at=1.0))
    assert [f.frame_id for f in outbox.due(10.0, 5.0)] == ["old-result", "lone-accept"]


def test_purge_drops_one_attempt_only() -> None:
    outbox = Outbox()
    outbox.add(frame("a", key=("t1", 1)))
    outbox.add(frame("b", key=("t1", 2)))
    assert outbox.purge(("t1", 1)) == 1
    assert [f.frame_id for f in outbox.all()] == ["b"]


def test_send_queue_is_fifo_with_heartbeats_first_and_a_progress_bound() -> None:
    queue = SendQueue(progress_limit=2)
    queue.put(b"accept", frame_id="a")
    assert queue.put_progress(b"p1")
    assert queue.put_progress(b"p2")
    assert not queue.put_progress(b"p3")  # dropped: the backlog is full
    queue.put(b"result", frame_id="r")
    queue.put_urgent(b"heartbeat")
    popped = []
    while (item := queue.pop()) is not None:
        popped.append(item)
    assert popped == [(b"heartbeat", None), (b"accept", "a"), (b"p1", None), (b"p2", None), (b"result", "r")]
    assert queue.put_progress(b"p4")  # room again once written


def test_recent_refs_forget_the_oldest() -> None:
    refs = RecentRefs(limit=2)
    refs.add("a", ("t1", 1))
    refs.add("b", ("t2", 1))
    refs.add("c", ("t3", 1))
    assert refs.get("a") is None
    assert refs.get("c") == ("t3", 1)
