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

from bench.childio import emit, wait_command

TERMINAL = {"done", "failed", "canceled"}
WATCHED = {"task/status", "task/progress"}
CONNECTS_IN_FLIGHT = 50


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


@dataclass
class Tally:
    """Everything this process' sockets saw."""

    tracks: list[dict[str, TaskTrack]] = field(default_factory=list)
    final_seq: dict[str, int] = field(default_factory=dict)
    latencies_us: list[int] = field(default_factory=list)
    progress: int = 0
    events: int = 0
    frames: int = 0
    """WebSocket messages received (a `batch` frame is one): events / frames is the coalescing."""
    first_progress_at: float | None = None
    last_progress_at: float | None = None
    closed: list[str] = field(default_factory=list)

    def on_event(self, tracks: dict[str, TaskTrack], kind: str, payload: Payload, now: float) -> None:
        task_id, seq = payload.task_id, payload.seq
        self.events += 1
        track = tracks.setdefault(task_id, TaskTrack())
        if seq == track.last + 1:
            track.received += 1
            track.last = seq
        elif seq <= track.last:
            track.out_of_order += 1
        else:
            track.gaps += seq - track.last - 1
            track.received += 1
            track.last = seq
        if kind == "task/progress":
            self.progress += 1
            data = payload.data
            if data is not None and data.t is not None:
                self.latencies_us.append(int((now - data.t) * 1e6))
            self.first_progress_at = self.first_progress_at or now
            self.last_progress_at = now
        elif payload.status in TERMINAL:
            self.final_seq[task_id] = max(self.final_seq.get(task_id, 0), seq)

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
            "latencies_us": self.latencies_us,
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


async def read(conn: ClientConnection, tally: Tally, tracks: dict[str, TaskTrack]) -> None:
    try:
        async for raw in conn:
            now = time.perf_counter()
            msg = _decode(raw)
            tally.frames += 1
            # Negotiated `batch`: the server sends what waits for this socket as one frame, items in order.
            items = (msg.payload.frames or []) if msg.type == "batch" and msg.payload is not None else (msg,)
            for item in items:
                if item.type in WATCHED and item.payload is not None:
                    tally.on_event(tracks, item.type, item.payload, now)
    except Exception as exc:  # the socket is the boundary: keep the reason for the report
        tally.closed.append(repr(exc)[:200])
    else:
        tally.closed.append(f"closed {conn.close_code}")


async def run(url: str, params: dict[str, Any]) -> None:
    token = os.environ["BENCH_TOKEN"]
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def opened() -> ClientConnection:
        async with gate:
            return await open_watcher(url, token)

    conns = await asyncio.gather(*(opened() for _ in range(int(params["sockets"]))))
    tally = Tally()
    readers = []
    for conn in conns:
        tracks: dict[str, TaskTrack] = {}
        tally.tracks.append(tracks)
        readers.append(asyncio.create_task(read(conn, tally, tracks)))
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
