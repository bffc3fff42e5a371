"""The bench's watcher client checks a frame's events per task run, not one by one: same figures either way."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

import pytest

from bench.ty.watchers import ParseCache, RawWatcher, Tally, TaskTrack


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


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes((0x80 * fin | opcode,))
    if n < 126:
        return head + bytes((n,)) + payload
    if n < 1 << 16:
        return head + bytes((126,)) + n.to_bytes(2, "big") + payload
    return head + bytes((127,)) + n.to_bytes(8, "big") + payload


def _unmask(frame: bytes) -> tuple[int, bytes]:
    assert frame[1] & 0x80, "a client frame must be masked"
    n, pos = frame[1] & 0x7F, 2
    if n == 126:
        n, pos = int.from_bytes(frame[2:4], "big"), 4
    mask, body = frame[pos : pos + 4], frame[pos + 4 :]
    assert len(body) == n
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(body))


async def _upgraded(tally: Tally) -> tuple[RawWatcher, _Transport, dict[str, TaskTrack]]:
    key = base64.b64encode(b"0123456789abcdef")
    tracks: dict[str, TaskTrack] = {}
    ws, transport = RawWatcher(b"GET / HTTP/1.1\r\n\r\n", key, tally, tracks, ParseCache()), _Transport()
    ws.connection_made(transport)
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    ws.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    await ws.opened
    return ws, transport, tracks


async def test_the_raw_client_reads_split_and_fragmented_messages_and_answers_pings() -> None:
    tally = Tally()
    ws, transport, tracks = await _upgraded(tally)
    assert transport.written == [b"GET / HTTP/1.1\r\n\r\n"]
    ws.data_received(_server_frame(0x1, b'{"type":"auth/ok","payload":{}}'))
    assert json.loads(ws.setup.get_nowait())["type"] == "auth/ok"
    ws.live = True
    big = _raw([_event("a", seq, t=1.0) for seq in range(1, 41)])  # over 125 bytes: a 16-bit length
    wire = _server_frame(0x1, big) + _server_frame(0x9, b"hi") + _server_frame(0x1, big[:10], fin=False)
    wire += _server_frame(0x0, big[10:])
    ws.data_received(wire[:3])  # a read may end anywhere, even inside the length
    ws.data_received(wire[3:200])
    ws.data_received(wire[200:])
    assert tally.frames == 2
    assert (tracks["a"].received, tracks["a"].out_of_order) == (40, 40)
    assert _unmask(transport.written[-1]) == (0xA, b"hi")
    ws.data_received(_server_frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
    assert _unmask(transport.written[-1]) == (0x8, (1000).to_bytes(2, "big"))
    assert transport.closed
    assert tally.closed == ["closed 1000"]


async def test_the_raw_client_refuses_a_wrong_upgrade_and_a_masked_server_frame() -> None:
    tally = Tally()
    ws = RawWatcher(b"GET / HTTP/1.1\r\n\r\n", b"key", tally, {}, ParseCache())
    ws.connection_made(_Transport())
    ws.data_received(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    with pytest.raises(RuntimeError, match="upgrade refused"):
        await ws.opened
    ws, transport, _ = await _upgraded(Tally())
    ws.data_received(bytes((0x81, 0x80 | 1)) + b"mask" + b"x")
    assert transport.closed
