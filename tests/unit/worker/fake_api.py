"""A real WebSocket server on loopback that plays the API's side of the agent protocol, for runtime tests.

It authenticates (header or query token), announces the heartbeat interval, records every frame the agent
sends (with the connection it came on), acks accept/result/error when `auto_ack` is on, and lets a test
push frames and drop the connection. Waiting is always on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from protocol.envelope import (
    AGENT_SENDS,
    Frame,
    MessageType,
    decode_batch,
    decode_frame,
    encode_batch,
    encode_frame,
    encode_payload,
)
from protocol.errors import ErrorCode
from protocol.limits import MAX_AGENT_FRAME_BYTES
from protocol.messages import Ack, AuthError, AuthOk, Batch, ErrorFrame, Heartbeat, Message, TaskSubmit

WAIT_S = 10.0
"""Bound on every wait in these tests (a liveness bound, not a timing assertion)."""


@dataclass
class Received:
    conn: int
    frame: Frame
    binary: bool


@dataclass
class Handshake:
    path: str
    headers: Headers
    query: dict[str, list[str]]


@dataclass
class FakeApi:
    agent_id: str = "agent-1"
    token: str = "token-1"
    heartbeat_interval_s: float = 0.05
    auto_ack: bool = True
    refuse_with_http: bool = False
    features: list[str] | None = None
    """What `auth/ok` says the server took (None: the field is left out, as for a peer that asked nothing)."""
    concurrency: int | None = None
    """What `auth/ok` says the server's record of the agent allows (None: left out, as an older server does)."""
    batch_frames: int = 0
    """`batch` frames the agent sent (their items are in `received`, one by one)."""
    received: list[Received] = field(default_factory=list)
    handshakes: list[Handshake] = field(default_factory=list)
    connections: int = 0
    _server: Server | None = None
    _current: ServerConnection | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/ws"

    async def __aenter__(self) -> FakeApi:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request, max_size=MAX_AGENT_FRAME_BYTES
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # -- test controls -------------------------------------------------------------------------------

    async def send(self, message: Message) -> str:
        """Send a frame to the connected agent; returns its envelope id."""
        await self.wait_for(lambda: self._current is not None)
        assert self._current is not None
        frame_id = str(uuid.uuid4())
        await self._current.send(encode_frame(message, frame_id=frame_id).decode())
        return frame_id

    async def submit(self, task_id: str, task_type: str, input: Any = None, *, attempt: int = 1) -> str:
        return await self.send(
            TaskSubmit(
                task_id=task_id, attempt=attempt, type=task_type, input=input or {}, priority=5, timeout_seconds=60
            )
        )

    async def submit_batch(self, task_ids: list[str], task_type: str) -> None:
        """Several submits in one `batch` frame (as the server sends what is ready to a batch agent)."""
        await self.wait_for(lambda: self._current is not None)
        assert self._current is not None
        items: list[tuple[MessageType, bytes, str | None]] = [
            (
                "task/submit",
                encode_payload(
                    TaskSubmit(task_id=t, attempt=1, type=task_type, input={}, priority=5, timeout_seconds=60)
                ),
                None,
            )
            for t in task_ids
        ]
        await self._current.send(encode_batch(items).decode())

    async def drop(self) -> None:
        """Close the agent's socket from the server side (an API restart, a network blip)."""
        assert self._current is not None
        await self._current.close(code=1001, reason="going away")

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout=timeout_s)

    # -- views of what the agent sent ----------------------------------------------------------------

    def frames(self, frame_type: str | None = None, task_id: str | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if (frame_type is None or r.frame.type == frame_type)
            and (task_id is None or getattr(r.frame.payload, "task_id", None) == task_id)
        ]

    def task_types(self, task_id: str) -> list[str]:
        """The frame types sent about one task, in order."""
        return [r.frame.type for r in self.frames(task_id=task_id)]

    def heartbeats(self) -> list[Heartbeat]:
        return [r.frame.payload for r in self.frames("heartbeat") if isinstance(r.frame.payload, Heartbeat)]

    # -- server side -----------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        self.handshakes.append(Handshake(path=request.path, headers=request.headers, query=query))
        if self.refuse_with_http and not self._credentials_ok(request.headers, query):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad credentials\n")
        return None

    def _credentials_ok(self, headers: Headers, query: dict[str, list[str]]) -> bool:
        bearer = headers.get("Authorization", "")
        token = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else query.get("agent_token", [""])[0]
        return (
            query.get("agent_id", [""])[0] == self.agent_id and query.get("role") == ["agent"] and token == self.token
        )

    async def _handle(self, ws: ServerConnection) -> None:
        handshake = self.handshakes[-1]
        if not self._credentials_ok(handshake.headers, handshake.query):
            error = ErrorCode.UNAUTHORIZED
            await ws.send(
                encode_frame(AuthError(error=error.error, message="bad agent credentials", code=error.code)).decode()
            )
            await ws.close(code=1008, reason="unauthorized")
            return
        ok = AuthOk(
            role="agent",
            subject_id=self.agent_id,
            session_id=uuid.uuid4().hex,
            heartbeat_interval_s=self.heartbeat_interval_s,
            heartbeat_timeout_s=self.heartbeat_interval_s * 4,
            features=self.features,
            concurrency=self.concurrency,
        )
        await ws.send(encode_frame(ok).decode())
        await ws.send(encode_frame(Heartbeat(interval=self.heartbeat_interval_s)).decode())
        async with self._changed:
            self.connections += 1
            conn = self.connections
            self._current = ws
            self._changed.notify_all()
        try:
            batch = "batch" in (self.features or ())
            async for raw in ws:
                outer = decode_frame(
                    raw, max_bytes=MAX_AGENT_FRAME_BYTES, accept=AGENT_SENDS | {"batch"} if batch else AGENT_SENDS
                )
                if isinstance(outer.payload, Batch):
                    self.batch_frames += 1
                    frames = [item for item in decode_batch(outer, accept=AGENT_SENDS) if isinstance(item, Frame)]
                else:
                    frames = [outer]
                for frame in frames:
                    if self.auto_ack and frame.type in ("task/accept", "task/result", "task/error"):
                        await ws.send(encode_frame(Ack(ref=frame.id)).decode())
                    async with self._changed:
                        self.received.append(Received(conn=conn, frame=frame, binary=isinstance(raw, bytes)))
                        self._changed.notify_all()
        finally:
            async with self._changed:
                if self._current is ws:
                    self._current = None
                self._changed.notify_all()

    async def refuse(self, received: Received, error: ErrorCode) -> None:
        """Answer one of the agent's frames with an error frame naming it in `ref`."""
        await self.send(ErrorFrame.of(error, "refused by the fake API", ref=received.frame.id))

    async def ack(self, received: Received) -> None:
        await self.send(Ack(ref=received.frame.id))
