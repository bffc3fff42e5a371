"""The bench's watcher client checks a frame's events per task run, not one by one: same figures either way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.ty.watchers import ParseCache, Tally, TaskTrack


def _event(task_id: str, seq: int, *, status: str | None = None, t: float | None = None) -> dict[str, Any]:
    if status is not None:
        return {"type": "task/status", "payload": {"taskId": task_id, "seq": seq, "status": status}}
    return {"type": "task/progress", "payload": {"taskId": task_id, "seq": seq, "data": {"t": t}}}


def _raw(events: list[dict[str, Any]]) -> bytes:
    if len(events) == 1:
        return json.dumps({"id": "x", **events[0]}).encode()
    return json.dumps({"id": "x", "type": "batch", "payload": {"frames": events}}).encode()


def _one_by_one(frames: list[list[dict[str, Any]]]) -> tuple[int, int, int, int]:
    """(received, gaps, out of order, last) summed over tasks, checking each event on its own."""
    tracks: dict[str, list[int]] = {}
    for events in frames:
        for event in events:
            p = event["payload"]
            track = tracks.setdefault(p["taskId"], [0, 0, 0, 0])  # last, received, gaps, out of order
            if p["seq"] == track[0] + 1:
                track[0], track[1] = p["seq"], track[1] + 1
            elif p["seq"] <= track[0]:
                track[3] += 1
            else:
                track[2] += p["seq"] - track[0] - 1
                track[0], track[1] = p["seq"], track[1] + 1
    return (
        sum(t[1] for t in tracks.values()),
        sum(t[2] for t in tracks.values()),
        sum(t[3] for t in tracks.values()),
        sum(t[0] for t in tracks.values()),
    )


CASES = {
    "in order, tasks interleaved": [
        [_event("a", 1, t=1.0), _event("b", 1, t=1.0), _event("a", 2, t=1.0)],
        [_event("b", 2, t=2.0), _event("a", 3, status="done")],
    ],
    "a gap inside a frame": [[_event("a", 1, t=1.0), _event("a", 3, t=1.0), _event("a", 4, t=1.0)]],
    "a gap between frames": [[_event("a", 1, t=1.0)], [_event("a", 3, t=1.0), _event("a", 4, t=1.0)]],
    "a repeat and a step back": [
        [_event("a", 1, t=1.0), _event("a", 2, t=1.0)],
        [_event("a", 2, t=1.0), _event("a", 1, t=1.0), _event("a", 3, t=1.0)],
    ],
    "counting down": [[_event("a", 3, t=1.0), _event("a", 2, t=1.0), _event("a", 1, t=1.0)]],
}


@pytest.mark.parametrize("frames", CASES.values(), ids=CASES.keys())
def test_per_task_runs_give_the_one_by_one_figures(frames: list[list[dict[str, Any]]]) -> None:
    tally, cache = Tally(), ParseCache()
    tracks: dict[str, TaskTrack] = {}
    tally.tracks.append(tracks)
    for now, events in enumerate(frames, start=10):
        tally.on_frame(tracks, cache.get(_raw(events)), float(now))
    received, gaps, out_of_order, last = _one_by_one(frames)
    assert sum(t.received for t in tracks.values()) == received
    assert sum(t.gaps for t in tracks.values()) == gaps
    assert sum(t.out_of_order for t in tracks.values()) == out_of_order
    assert sum(t.last for t in tracks.values()) == last
    assert tally.events == sum(len(events) for events in frames)


def test_a_shared_frame_is_parsed_once_and_checked_per_socket() -> None:
    tally, cache = Tally(), ParseCache()
    raw = _raw([_event("a", 1, t=1.0), _event("a", 2, t=1.5), _event("a", 3, status="done")])
    sockets: list[dict[str, TaskTrack]] = [{}, {}]
    tally.tracks.extend(sockets)
    tally.on_frame(sockets[0], cache.get(raw), 2.0)
    tally.on_frame(sockets[1], cache.get(raw), 3.0)
    tally.on_frame(sockets[1], cache.get(raw), 4.0)  # the second socket gets it twice: out of order
    assert cache.hits == 2
    report = tally.report()
    assert (report["missing"], report["out_of_order"], report["events"], report["frames"]) == (0, 3, 9, 3)
    assert report["latencies_us"] == [1_000_000, 500_000, 2_000_000, 1_500_000, 3_000_000, 2_500_000]
    assert tally.final_seq == {"a": 3}
