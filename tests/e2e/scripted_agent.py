"""A scripted agent speaking the wire protocol directly, for end-to-end tests that observe dispatch.

It runs its own event loop in a thread, so synchronous tests can drive REST while it works. It keeps
a ledger outside taskyard: which (task, attempt) it started (EXEC), the order it received them, and
the most tasks it ever held at once — the numbers the scheduler's guarantees are checked against.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

from protocol.envelope import decode_frame, encode_frame
from protocol.limits import MAX_AGENT_FRAME_BYTES
from protocol.messages import Heartbeat, TaskAccept, TaskCancel, TaskProgress, TaskResult, TaskSubmit


@dataclass
class ScriptedAgent:
    """Accepts every task, holds it `input.holdS` seconds (default `hold_s`), then returns a result."""

    api_url: str
    agent_id: str
    token: str
    name: str = "scripted"
    hold_s: float = 0.0
    release: threading.Event | None = None
    """When set, tasks are held until this event is set (instead of `hold_s`)."""
    progress: int = 0
    """`task/progress` frames sent between the accept and the result of each task."""

    received: list[tuple[str, int]] = field(default_factory=list)
    finished: list[tuple[str, int]] = field(default_factory=list)
    canceled: list[tuple[str, int]] = field(default_factory=list)
    running_now: int = 0
    max_running: int = 0
    errors: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _connected: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, *, wait_connected_s: float = 15.0) -> ScriptedAgent:
        self._thread = threading.Thread(target=self._run_thread, name=f"agent-{self.name}", daemon=True)
        self._thread.start()
        if not self._connected.wait(wait_connected_s):
            raise AssertionError(f"scripted agent {self.name} did not connect: {self.errors}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run_thread(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        ws_url = self.api_url.replace("http://", "ws://") + f"/ws?role=agent&agent_id={self.agent_id}"
        try:
            async with connect(
                ws_url,
                additional_headers={"Authorization": f"Bearer {self.token}"},
                max_size=MAX_AGENT_FRAME_BYTES,
            ) as socket:
                first = decode_frame(await socket.recv(), max_bytes=MAX_AGENT_FRAME_BYTES)
                if first.type != "auth/ok":
                    self.errors.append(f"auth refused: {first.payload}")
                    return
                self._connected.set()
                tasks: set[asyncio.Task[None]] = set()
                reader = asyncio.create_task(self._read(socket, tasks))
                beat = asyncio.create_task(self._heartbeat(socket))
                # The server closing the socket (revoked, deleted) ends the agent.
                stop = self._stop
                reader.add_done_callback(lambda _: stop.set())
                await self._stop.wait()
                for task in (reader, beat, *tasks):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(reader, beat, *tasks, return_exceptions=True)
        except (OSError, websockets.WebSocketException) as exc:
            self.errors.append(repr(exc))

    async def _heartbeat(self, socket: ClientConnection) -> None:
        while True:
            with self._lock:
                running = self.running_now
            await socket.send(encode_frame(Heartbeat(running=running, capacity=0)).decode())
            await asyncio.sleep(0.3)

    async def _read(self, socket: ClientConnection, tasks: set[asyncio.Task[None]]) -> None:
        try:
            await self._read_frames(socket, tasks)
        except Exception as exc:
            self.errors.append(f"reader: {exc!r}")
            raise
        if socket.close_code is not None:
            self.errors.append(f"closed by server: {socket.close_code} {socket.close_reason}")

    async def _read_frames(self, socket: ClientConnection, tasks: set[asyncio.Task[None]]) -> None:
        seen: set[tuple[str, int]] = set()
        async for raw in socket:
            frame = decode_frame(raw, max_bytes=MAX_AGENT_FRAME_BYTES)
            payload = frame.payload
            if isinstance(payload, TaskSubmit):
                key = (payload.task_id, payload.attempt)
                if key in seen:
                    continue
                seen.add(key)
                task = asyncio.create_task(self._run_task(socket, payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif isinstance(payload, TaskCancel):
                with self._lock:
                    self.canceled.append((payload.task_id, payload.attempt))

    async def _run_task(self, socket: ClientConnection, submit: TaskSubmit) -> None:
        key = (submit.task_id, submit.attempt)
        with self._lock:
            self.received.append(key)
            self.running_now += 1
            self.max_running = max(self.max_running, self.running_now)
        try:
            await socket.send(encode_frame(TaskAccept(task_id=submit.task_id, attempt=submit.attempt)).decode())
            for step in range(self.progress):
                progress = TaskProgress(task_id=submit.task_id, attempt=submit.attempt, data={"step": step})
                await socket.send(encode_frame(progress).decode())
            hold = self.hold_s
            if isinstance(submit.input, dict) and "holdS" in submit.input:
                hold = float(submit.input["holdS"])
            if self.release is not None:
                while not self.release.is_set():
                    await asyncio.sleep(0.02)
            elif hold:
                await asyncio.sleep(hold)
        finally:
            with self._lock:
                self.running_now -= 1
        output: dict[str, Any] = {"agent": self.name, "at": time.time()}
        await socket.send(
            encode_frame(
                TaskResult(task_id=submit.task_id, attempt=submit.attempt, output=output), frame_id=str(uuid.uuid4())
            ).decode()
        )
        with self._lock:
            self.finished.append(key)


def decode_json(data: bytes | str) -> Any:
    return msgspec.json.decode(data)
