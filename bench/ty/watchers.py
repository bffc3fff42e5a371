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
import base64
import hashlib
import json
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

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


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class RawWatcher(asyncio.Protocol):
    """One watcher socket speaking RFC 6455 itself (the upgrade, unmasked server frames, masked replies).

    Why not the `websockets` client: per message it wakes a coroutine through its assembler, which cost more
    CPU than the checks themselves; with a thousand sockets on the 2 cores the API runs on, the client's
    cost showed as fan-out latency. Here each complete message is handed to the tally as the bytes arrive
    (`data_received`), timed once per read, before any parsing.
    """

    def __init__(
        self, request: bytes, key: bytes, tally: Tally, tracks: dict[str, TaskTrack], cache: ParseCache
    ) -> None:
        self._request = request
        self._accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())  # RFC 6455 fixes the hash
        self._tally = tally
        self._tracks = tracks
        self._cache = cache
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._upgraded = False
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.setup: asyncio.Queue[bytes] = asyncio.Queue()
        """Messages before `live` (auth/ok, the subscribe's ack), for the setup coroutine."""
        self.live = False
        self.stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the upgrade"))
        if not self.stopping:
            self._tally.closed.append(repr(exc)[:200] if exc else "closed by the server")

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()  # arrival, before any parsing
        buf = self._buf
        buf += data
        if not self._upgraded and not self._upgrade(buf):
            return
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            length, pos = second & 0x7F, 2
            if second & 0x80:
                self._fail("masked frame from the server")
                return
            if length == 126:
                if len(buf) < 4:
                    return
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            self._frame(first & 0x80, first & 0x0F, payload, now)

    def _upgrade(self, buf: bytearray) -> bool:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head[1:])}
        if not head[0].startswith(b"HTTP/1.1 101") or headers.get(b"sec-websocket-accept") != self._accept:
            self._fail(f"upgrade refused: {head[0][:100]!r}")
            return False
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode == _OP_PING:
            self.send(_OP_PONG, payload)
        elif opcode == _OP_CLOSE:
            if not self.stopping:
                self._tally.closed.append(f"closed {int.from_bytes(payload[:2], 'big') if payload else 1005}")
                self.stopping = True
            self.send(_OP_CLOSE, payload[:2])
            if self._transport is not None:
                self._transport.close()
        elif opcode in (_OP_TEXT, _OP_BINARY, _OP_CONT):
            self._fragments.append(payload)
            if fin:
                message = self._fragments[0] if len(self._fragments) == 1 else b"".join(self._fragments)
                self._fragments = []
                if self.live:
                    self._tally.on_frame(self._tracks, self._cache.get(message), now)
                else:
                    self.setup.put_nowait(message)

    def send(self, opcode: int, payload: bytes) -> None:
        """One masked frame (a client's frames must be)."""
        if self._transport is None or self._transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 1 << 16:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        self._transport.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self) -> None:
        self.stopping = True
        self.send(_OP_CLOSE, (1000).to_bytes(2, "big"))
        if self._transport is not None:
            self._transport.close()

    def _fail(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(why))
        self._tally.closed.append(why)
        self.stopping = True
        if self._transport is not None:
            self._transport.close()


async def open_watcher(url: str, token: str, tally: Tally, cache: ParseCache) -> RawWatcher:
    """A socket subscribed to all of the user's tasks (`batch` negotiated), its events going to `tally`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {parts.path}?role=client&features=batch HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    tracks: dict[str, TaskTrack] = {}
    loop = asyncio.get_running_loop()
    _, ws = await asyncio.wait_for(
        loop.create_connection(lambda: RawWatcher(request, key, tally, tracks, cache), host, port), timeout=30
    )
    await asyncio.wait_for(ws.opened, timeout=30)
    first = json.loads(await asyncio.wait_for(ws.setup.get(), timeout=30))
    if first.get("type") != "auth/ok":
        raise RuntimeError(f"watcher: expected auth/ok, got {str(first)[:200]}")
    sub_id, data = frame("subscribe", {"all": True})
    ws.send(_OP_TEXT, data.encode())
    while True:
        msg = json.loads(await asyncio.wait_for(ws.setup.get(), timeout=30))
        for item in msg["payload"]["frames"] if msg.get("type") == "batch" else (msg,):
            if item.get("type") == "ack" and item["payload"].get("ref") == sub_id:
                tally.tracks.append(tracks)
                ws.live = True
                while not ws.setup.empty():  # anything after the ack goes to the checks, in order
                    tally.on_frame(tracks, cache.get(ws.setup.get_nowait()), time.perf_counter())
                return ws
            if item.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {item['payload']}")


async def run(url: str, params: dict[str, Any]) -> None:
    token = os.environ["BENCH_TOKEN"]
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    tally = Tally()
    cache = ParseCache()

    async def opened() -> RawWatcher:
        async with gate:
            return await open_watcher(url, token, tally, cache)

    sockets = await asyncio.gather(*(opened() for _ in range(int(params["sockets"]))))
    emit({"ready": {"sockets": len(sockets)}})
    await asyncio.to_thread(wait_command, "report")
    for ws in sockets:
        ws.close()
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
