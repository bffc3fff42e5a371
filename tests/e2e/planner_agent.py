"""A scripted planner agent for end-to-end tests: speaks the wire protocol, answers planner tasks with canned
outputs chosen by the test, and records every `task/submit` it got (credentials included).

Stands in for our LLM worker (built elsewhere) so the planner API, the scheduler and the socket path are tested
for real without a model. Runs its own event loop in a thread, so synchronous tests drive REST meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect

from protocol.envelope import decode_frame, encode_frame
from protocol.limits import MAX_AGENT_FRAME_BYTES
from protocol.messages import (
    ErrorFrame,
    Heartbeat,
    TaskAccept,
    TaskError,
    TaskProgress,
    TaskResult,
    TaskStream,
    TaskSubmit,
)


@dataclass(frozen=True)
class Answer:
    """What the agent does with one task: a result (`output`) or a failure (`error`, `message`)."""

    output: Any = None
    error: str | None = None
    message: str = ""
    retryable: bool = False


class TaskIO:
    """Lets a handler send progress or stream pieces of the task it answers."""

    def __init__(self, agent: PlannerAgent, socket: ClientConnection, submit: TaskSubmit) -> None:
        self._agent = agent
        self._socket = socket
        self._submit = submit
        self._offset = 0

    async def piece(self, text: str, kind: Literal["stream", "progress"] = "stream") -> None:
        """One piece of the answer: `task/stream` (byte offsets kept here) or `task/progress` with `{delta}`."""
        submit = self._submit
        if kind == "stream":
            frame: Any = TaskStream(task_id=submit.task_id, attempt=submit.attempt, offset=self._offset, delta=text)
            self._offset += len(text.encode())
        else:
            frame = TaskProgress(task_id=submit.task_id, attempt=submit.attempt, data={"delta": text})
        await self._socket.send(encode_frame(frame).decode())


Handler = Callable[[TaskSubmit, TaskIO], Awaitable[Answer]]


@dataclass
class PlannerAgent:
    api_url: str
    agent_id: str
    token: str
    handler: Handler
    submits: list[TaskSubmit] = field(default_factory=list)
    refusals: list[ErrorFrame] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _connected: threading.Event = field(default_factory=threading.Event)

    def start(self, wait_s: float = 15.0) -> PlannerAgent:
        self._thread = threading.Thread(target=self._run, name="planner-agent", daemon=True)
        self._thread.start()
        if not self._connected.wait(wait_s):
            raise AssertionError(f"planner agent did not connect: {self.errors}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        url = self.api_url.replace("http://", "ws://") + f"/ws?role=agent&agent_id={self.agent_id}"
        async with connect(
            url, additional_headers={"Authorization": f"Bearer {self.token}"}, max_size=MAX_AGENT_FRAME_BYTES
        ) as socket:
            first = decode_frame(await socket.recv(), max_bytes=MAX_AGENT_FRAME_BYTES)
            if first.type != "auth/ok":
                self.errors.append(f"refused: {first.payload}")
                return
            self._connected.set()
            running: set[asyncio.Task[None]] = set()
            reader = asyncio.create_task(self._read(socket, running))
            beat = asyncio.create_task(self._beat(socket))
            reader.add_done_callback(lambda _: self._stop.set() if self._stop else None)
            await self._stop.wait()
            for task in (reader, beat, *running):
                task.cancel()
            await asyncio.gather(reader, beat, *running, return_exceptions=True)

    async def _beat(self, socket: ClientConnection) -> None:
        while True:
            await socket.send(encode_frame(Heartbeat(running=0, capacity=4)).decode())
            await asyncio.sleep(0.3)

    async def _read(self, socket: ClientConnection, running: set[asyncio.Task[None]]) -> None:
        seen: set[tuple[str, int]] = set()
        async for raw in socket:
            frame = decode_frame(raw, max_bytes=MAX_AGENT_FRAME_BYTES)
            payload = frame.payload
            if isinstance(payload, ErrorFrame):
                self.refusals.append(payload)
            elif isinstance(payload, TaskSubmit) and (payload.task_id, payload.attempt) not in seen:
                seen.add((payload.task_id, payload.attempt))
                self.submits.append(payload)
                task = asyncio.create_task(self._answer(socket, payload))
                running.add(task)
                task.add_done_callback(running.discard)

    async def _answer(self, socket: ClientConnection, submit: TaskSubmit) -> None:
        await socket.send(encode_frame(TaskAccept(task_id=submit.task_id, attempt=submit.attempt)).decode())
        try:
            answer = await self.handler(submit, TaskIO(self, socket, submit))
        except Exception as exc:  # a test's handler bug: report it rather than hang the test
            self.errors.append(f"handler: {exc!r}")
            answer = Answer(error="HandlerError", message=type(exc).__name__)
        if answer.error is not None:
            frame: Any = TaskError(
                task_id=submit.task_id,
                attempt=submit.attempt,
                error=answer.error,
                message=answer.message,
                retryable=answer.retryable,
            )
        else:
            frame = TaskResult(task_id=submit.task_id, attempt=submit.attempt, output=answer.output)
        await socket.send(encode_frame(frame, frame_id=str(uuid.uuid4())).decode())
