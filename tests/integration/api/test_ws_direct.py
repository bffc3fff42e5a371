"""Frames written straight to the transport (api/ws/direct.py), through real uvicorn and real Redis pub/sub.

Watchers that negotiated `batch` get each round's chunk as the same frame bytes, written by the fan-out
without waking their writers; every event arrives once and in order. A watcher that stops reading is
closed with 4008 once its outbox passes the cap (the transport's flow control holds the frames back).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from api.ws.direct import DirectWriter, text_frame
from api.ws.framing import CloseCode
from protocol.messages import Subscribe
from scheduler.keys import Keys
from tests.integration.api.test_ws_support import open_stack, stack, ws_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.settings import ApiSettings
    from tests.integration.api.test_ws_support import Peer, Stack

__all__ = ("stack",)  # the fixture, imported for pytest


def _message(owner: str, task_id: str, seq: int, data: Any) -> bytes:
    """What the scheduler scripts publish on the owner's watch channel for a progress event."""
    body = {"taskId": task_id, "seq": seq, "attempt": 1, "data": data}
    return msgspec.json.encode(
        {"type": "task/progress", "ownerId": owner, "taskId": task_id, "seq": seq, "payload": body}
    )


def _seqs(raw: str | bytes) -> list[tuple[str, int]]:
    frame = msgspec.json.decode(raw)
    items = frame["payload"]["frames"] if frame["type"] == "batch" else [frame]
    return [(i["payload"]["taskId"], i["payload"]["seq"]) for i in items if i["type"] == "task/progress"]


async def _batch_watcher(stack: Stack, token: str) -> Peer:
    peer = await stack.open("role=client&features=batch", {"Authorization": f"Bearer {token}"})
    assert (await peer.recv()).type == "auth/ok"
    await peer.send(Subscribe(all=True))
    assert (await peer.recv_type("ack")).type == "ack"
    return peer


def test_text_frame_is_an_unmasked_final_text_frame_at_every_length_form() -> None:
    forms = ((5, b"\x81\x05"), (300, b"\x81\x7e\x01\x2c"), (70_000, b"\x81\x7f" + (70_000).to_bytes(8, "big")))
    for size, head in forms:
        payload = b"x" * size
        assert text_frame(payload) == head + payload


async def test_watchers_get_round_chunks_written_straight_to_their_transports(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real_write = DirectWriter.write

    def counted(self: DirectWriter, frame: bytes) -> bool:
        writes.append(frame)
        return real_write(self, frame)

    monkeypatch.setattr(DirectWriter, "write", counted)
    person = await stack.person()
    peers = [await _batch_watcher(stack, person.token) for _ in range(3)]
    writes.clear()
    channel = Keys(stack.settings.redis.prefix).watch_channel(person.id)
    sent = [(task, seq) for seq in range(1, 21) for task in ("a", "b")]
    for task, seq in sent:
        await stack.redis.publish(channel, _message(person.id, task, seq, {"n": seq}))

    for peer in peers:
        seen: list[tuple[str, int]] = []
        while len(seen) < len(sent):
            seen += _seqs(await peer.conn.recv())
        assert sorted(seen) == sorted(sent)  # every event, once
        for task in ("a", "b"):
            assert [s for t, s in seen if t == task] == list(range(1, 21))  # in order
    # The fan-out wrote the chunks itself: the same bytes object to each socket, once per round.
    assert writes
    assert len({id(frame) for frame in writes}) * len(peers) == len(writes)


async def test_a_socket_without_the_hook_sends_through_asgi(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.ws.framing.direct_writer", lambda scope: None)  # as under a server without the hook
    direct_writes: list[bytes] = []
    monkeypatch.setattr(DirectWriter, "write", lambda self, frame: direct_writes.append(frame) or True)
    person = await stack.person()
    peer = await _batch_watcher(stack, person.token)
    channel = Keys(stack.settings.redis.prefix).watch_channel(person.id)
    for seq in range(1, 11):
        await stack.redis.publish(channel, _message(person.id, "a", seq, {"n": seq}))
    seen: list[tuple[str, int]] = []
    while len(seen) < 10:
        seen += _seqs(await peer.conn.recv())
    assert seen == [("a", n) for n in range(1, 11)]
    assert direct_writes == []


async def test_a_watcher_that_stops_reading_is_closed_with_4008(
    make_settings: Callable[..., ApiSettings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="api.ws.endpoint")
    settings = ws_settings(make_settings, TASKYARD_API_SEND_BACKLOG=5)
    async for running in open_stack(settings):
        person = await running.person()
        sock = await asyncio.to_thread(_stalled_watcher, running.server.port, person.token)
        try:
            channel = Keys(settings.redis.prefix).watch_channel(person.id)
            blob = "x" * 32_000
            # Far more than the kernel buffers and the transport's high-water mark hold for a peer that reads nothing.
            for seq in range(1, 400):
                await running.redis.publish(channel, _message(person.id, "a", seq, {"blob": blob}))
                if any("code=4008" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.005)
            for _ in range(200):
                if any("code=4008" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            closed = [r.getMessage() for r in caplog.records if "ws client closed" in r.getMessage()]
            assert closed == [f"ws client closed code={int(CloseCode.LAGGED)}"]
        finally:
            sock.close()


def _stalled_watcher(port: int, token: str) -> socket.socket:
    """A watcher on a plain socket with a small receive buffer: upgraded, subscribed to all, then never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?role=client&features=batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    got = b""
    while b"auth/ok" not in got:
        got += sock.recv(4096)
    body = b'{"id":"00000000-0000-4000-8000-000000000001","type":"subscribe","ts":0,"payload":{"all":true}}'
    mask = os.urandom(4)
    sock.sendall(bytes((0x81, 0x80 | len(body))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
    while b'"ack"' not in got:
        got += sock.recv(4096)
    return sock
