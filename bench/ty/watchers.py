"""A watcher process: `sockets` client sockets (docs/protocol.md, by hand, with the `batch` feature), each
subscribed to all of the user's tasks, checking that every task's events arrive complete and in `seq` order,
and timing each progress event from the agent's send (`data.t`, perf_counter: one clock on the machine) to
arrival.

`python -m bench.ty.watchers --url ws://.../ws --params JSON`, the access token in BENCH_TOKEN.
Speaks `bench.childio`: `ready` once every socket is subscribed, `result` on `report`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from bench.childio import emit, wait_command

TERMINAL = {"done", "failed", "canceled"}
WATCHED = {"task/status", "task/progress"}
CONNECTS_IN_FLIGHT = 50
PARSE_CACHE_FRAMES = 256


class Data(msgspec.Struct):
    """A bench progress event's data: the agent's send time (other fields are skipped)."""

    t: float | None = None


class Payload(msgspec.Struct, rename="camel"):
    """The fields of a frame's payload this client reads (a `batch` frame's items in `frames`)."""

    task_id: str = ""
    seq: int = 0
    status: str | None = None
    data: Data | None = None
    frames: list[Item] | None = None


class Item(msgspec.Struct):
    type: str = ""
    payload: Payload | None = None


# A thousand sockets' worth of frames: decoding only the fields read into structs is several times
# cheaper than into dicts, and every microsecond the watchers spend is one the API does not get on a
# 2-core box.
_decode = msgspec.json.Decoder(Item).decode


def frame(type_: str, payload: dict[str, Any]) -> tuple[str, str]:
    frame_id = str(uuid.uuid4())
    return frame_id, json.dumps({"id": frame_id, "type": type_, "ts": int(time.time()), "payload": payload})


@dataclass
class TaskTrack:
    """One socket's view of one task: seqs in order so far, and what broke the order."""

    last: int = 0
    received: int = 0
    gaps: int = 0
    out_of_order: int = 0

    def take(self, seqs: list[int]) -> None:
        """The task's seqs in one frame, in arrival order, one by one."""
        for seq in seqs:
            if seq == self.last + 1:
                self.received += 1
                self.last = seq
            elif seq <= self.last:
                self.out_of_order += 1
            else:
                self.gaps += seq - self.last - 1
                self.received += 1
                self.last = seq


@dataclass(slots=True)
class Parsed:
    """What one received frame carries, per task, for the order checks of every socket that gets it.

    `runs`: per task (first seen first), its seqs in arrival order, and whether they count up by one
    (then a socket checks only the first against what it had: the same answer as one by one).
    """

    runs: list[tuple[str, int, int, list[int] | None]]
    """(task id, first seq, last seq, the seqs when they do not simply count up by one, else None)."""
    sent_at: list[float]
    """The agent's send time of each progress event carrying one (`data.t`)."""
    events: int
    progress: int
    terminal: list[tuple[str, int]]


def parse(raw: bytes | str) -> Parsed:
    msg = _decode(raw)
    # Negotiated `batch`: the server sends what waits for this socket as one frame, items in order.
    items = (msg.payload.frames or []) if msg.type == "batch" and msg.payload is not None else (msg,)
    seqs: dict[str, list[int]] = {}
    sent_at: list[float] = []
    terminal: list[tuple[str, int]] = []
    events = progress = 0
    for item in items:
        payload = item.payload
        if item.type not in WATCHED or payload is None:
            continue
        events += 1
        seqs.setdefault(payload.task_id, []).append(payload.seq)
        if item.type == "task/progress":
            progress += 1
            if payload.data is not None and payload.data.t is not None:
                sent_at.append(payload.data.t)
        elif payload.status in TERMINAL:
            terminal.append((payload.task_id, payload.seq))
    runs = [
        (task_id, run[0], run[-1], None if run == list(range(run[0], run[0] + len(run))) else run)
        for task_id, run in seqs.items()
    ]
    return Parsed(runs, sent_at, events, progress, terminal)


class ParseCache:
    """Parsed frames by their bytes: the server sends the same shared chunk (same text, same envelope id)
    to every socket watching the same tasks, so a process parses it once, not once per socket.
    Bounded: the frames of one delivery round arrive close together."""

    def __init__(self, size: int = PARSE_CACHE_FRAMES) -> None:
        self._size = size
        self._parsed: dict[bytes | str, Parsed] = {}
        self.hits = 0

    def get(self, raw: bytes | str) -> Parsed:
        parsed = self._parsed.get(raw)
        if parsed is not None:
            self.hits += 1
            return parsed
        parsed = self._parsed[raw] = parse(raw)
        if len(self._parsed) > self._size:
            del self._parsed[next(iter(self._parsed))]
        return parsed


@dataclass
class Tally:
    """Everything this process' sockets saw."""

    tracks: list[dict[str, TaskTrack]] = field(default_factory=list)
    final_seq: dict[str, int] = field(default_factory=dict)
    arrivals: list[tuple[float, list[float]]] = field(default_factory=list)
    """(arrival time, the agent send times of its progress events) per frame: latencies are worked out at
    report time, off the receiving path."""
    progress: int = 0
    events: int = 0
    frames: int = 0
    """WebSocket messages received (a `batch` frame is one): events / frames is the coalescing."""
    first_progress_at: float | None = None
    last_progress_at: float | None = None
    closed: list[str] = field(default_factory=list)

    def on_frame(self, tracks: dict[str, TaskTrack], parsed: Parsed, now: float) -> None:
        """One socket's frame: every task's seqs checked against what this socket had (exactly as one by one)."""
        self.frames += 1
        self.events += parsed.events
        for task_id, first, last, irregular in parsed.runs:
            track = tracks.get(task_id)
            if track is None:
                track = tracks[task_id] = TaskTrack()
            if irregular is None and first == track.last + 1:
                track.received += last - first + 1
                track.last = last
            else:
                track.take(irregular if irregular is not None else list(range(first, last + 1)))
        if parsed.progress:
            self.progress += parsed.progress
            if parsed.sent_at:
                self.arrivals.append((now, parsed.sent_at))
            self.first_progress_at = self.first_progress_at or now
            self.last_progress_at = now
        for task_id, seq in parsed.terminal:
            if seq > self.final_seq.get(task_id, 0):
                self.final_seq[task_id] = seq

    def report(self) -> dict[str, Any]:
        """Per socket and task: missing = the task's last seq (its terminal event) minus what arrived in order."""
        missing = gaps = out_of_order = incomplete = 0
        for tracks in self.tracks:
            for task_id, final in self.final_seq.items():
                track = tracks.get(task_id, TaskTrack())
                missing += max(0, final - track.received)
                incomplete += track.received < final
            for track in tracks.values():
                gaps += track.gaps
                out_of_order += track.out_of_order
        return {
            "sockets": len(self.tracks),
            "tasks": len(self.final_seq),
            "events": self.events,
            "frames": self.frames,
            "progress": self.progress,
            "missing": missing,
            "gaps": gaps,
            "out_of_order": out_of_order,
            "incomplete_socket_tasks": incomplete,
            "first_progress_at": self.first_progress_at,
            "last_progress_at": self.last_progress_at,
            "latencies_us": [int((now - t) * 1e6) for now, sent in self.arrivals for t in sent],
            "closed": self.closed,
        }


async def open_watcher(url: str, token: str) -> ClientConnection:
    conn = await connect(
        f"{url}?role=client&features=batch",
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=1 << 20,
        open_timeout=30,
        compression=None,
    )
    first = json.loads(await asyncio.wait_for(conn.recv(), timeout=30))
    if first.get("type") != "auth/ok":
        raise RuntimeError(f"watcher: expected auth/ok, got {str(first)[:200]}")
    sub_id, data = frame("subscribe", {"all": True})
    await conn.send(data)
    while True:
        msg = json.loads(await asyncio.wait_for(conn.recv(), timeout=30))
        for item in msg["payload"]["frames"] if msg.get("type") == "batch" else (msg,):
            if item.get("type") == "ack" and item["payload"].get("ref") == sub_id:
                return conn
            if item.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {item['payload']}")


async def read(conn: ClientConnection, tally: Tally, tracks: dict[str, TaskTrack], cache: ParseCache) -> None:
    try:
        while True:
            raw = await conn.recv(decode=False)  # bytes: no UTF-8 decode of what msgspec parses anyway
            now = time.perf_counter()  # arrival, before any parsing
            tally.on_frame(tracks, cache.get(raw), now)
    except ConnectionClosedOK:
        tally.closed.append(f"closed {conn.close_code}")
    except Exception as exc:  # the socket is the boundary: keep the reason for the report
        tally.closed.append(repr(exc)[:200])


async def run(url: str, params: dict[str, Any]) -> None:
    token = os.environ["BENCH_TOKEN"]
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def opened() -> ClientConnection:
        async with gate:
            return await open_watcher(url, token)

    conns = await asyncio.gather(*(opened() for _ in range(int(params["sockets"]))))
    tally = Tally()
    cache = ParseCache()
    readers = []
    for conn in conns:
        tracks: dict[str, TaskTrack] = {}
        tally.tracks.append(tracks)
        readers.append(asyncio.create_task(read(conn, tally, tracks, cache)))
    emit({"ready": {"sockets": len(conns)}})
    await asyncio.to_thread(wait_command, "report")
    for reader in readers:
        reader.cancel()
    for conn in conns:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 2)
    emit({"result": tally.report()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--params", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(run(args.url, json.loads(args.params)))
    except Exception as exc:  # the driver reports it as FAILED; the trace goes to the log
        traceback.print_exc()
        emit({"error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc
    wait_command("stop")


if __name__ == "__main__":
    main()
