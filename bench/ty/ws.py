"""WebSocket peers of the bench: a client watching every task's status, and a probe agent.

Both speak docs/protocol.md by hand (JSON envelopes), as any non-Python agent would, so the bench
also checks that the documented protocol is enough. Timing uses `time.perf_counter()` in this one
process, so the watcher's and the probe's times are directly comparable with the submit times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

logger = logging.getLogger(__name__)

TERMINAL = {"done", "failed", "canceled"}
KEEPALIVE_S = 60.0
STALL_S = 60.0


def frame(type_: str, payload: dict[str, Any]) -> tuple[str, str]:
    """(envelope id, encoded envelope)."""
    frame_id = str(uuid.uuid4())
    return frame_id, json.dumps({"id": frame_id, "type": type_, "ts": int(time.time()), "payload": payload})


async def _expect_auth_ok(conn: ClientConnection, who: str) -> dict[str, Any]:
    first = json.loads(await asyncio.wait_for(conn.recv(), timeout=15))
    if first.get("type") != "auth/ok":
        raise RuntimeError(f"{who}: expected auth/ok, got {str(first)[:300]}")
    payload: dict[str, Any] = first["payload"]
    return payload


class Watcher:
    """A `role=client` socket subscribed to all of the user's tasks; records when each task ended."""

    def __init__(self, ws_url: str, access_token: str) -> None:
        self._url = f"{ws_url}?{urlencode({'role': 'client'})}"
        self._token = access_token
        self._conn: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.ended_at: dict[str, float] = {}
        self.ended_status: dict[str, str] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._tracked: set[str] = set()
        self._tracked_done = asyncio.Event()
        self.closed_reason: str | None = None

    async def start(self) -> None:
        self._conn = await connect(
            self._url, additional_headers={"Authorization": f"Bearer {self._token}"}, max_size=1 << 20, open_timeout=15
        )
        await _expect_auth_ok(self._conn, "watcher")
        sub_id, data = frame("subscribe", {"all": True})
        await self._conn.send(data)
        while True:
            msg = json.loads(await asyncio.wait_for(self._conn.recv(), timeout=15))
            if msg.get("type") == "ack" and msg["payload"].get("ref") == sub_id:
                break
            if msg.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {msg['payload']}")
        self._reader = asyncio.create_task(self._read())
        self._keepalive = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        """A heartbeat now and then: the server closes a client that sends nothing for its idle timeout."""
        assert self._conn is not None
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            await self._conn.send(frame("heartbeat", {})[1])

    async def _read(self) -> None:
        assert self._conn is not None
        try:
            async for raw in self._conn:
                msg = json.loads(raw)
                if msg.get("type") != "task/status":
                    continue
                payload = msg["payload"]
                if payload.get("status") in TERMINAL:
                    self._ended(str(payload["taskId"]), str(payload["status"]))
        except Exception as exc:  # the socket is the boundary: keep the reason for the report
            self.closed_reason = repr(exc)
        finally:
            code = self._conn.close_code
            self.closed_reason = self.closed_reason or f"closed ({code})"
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_exception(RuntimeError(f"watcher socket {self.closed_reason}"))
            self._tracked_done.set()

    def _ended(self, task_id: str, status: str) -> None:
        if task_id in self.ended_at:
            return
        self.ended_at[task_id] = time.perf_counter()
        self.ended_status[task_id] = status
        waiter = self._waiters.pop(task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(self.ended_at[task_id])
        if task_id in self._tracked:
            self._tracked.discard(task_id)
            if not self._tracked:
                self._tracked_done.set()

    def track(self, task_ids: list[str]) -> None:
        """Add tasks to the set `wait_tracked()` waits for (tasks already ended are not added)."""
        self._tracked.update(t for t in task_ids if t not in self.ended_at)
        if self._tracked:
            self._tracked_done.clear()

    async def wait_tracked(self, timeout_s: float, *, stall_s: float = STALL_S) -> None:
        """Wait until every tracked task has ended.

        Raises TimeoutError (naming how many are still open) after `timeout_s`, or sooner when no
        tracked task has ended for `stall_s`: a stuck run fails fast instead of waiting out the bound.
        """
        deadline = time.monotonic() + timeout_s
        while self._tracked:
            before = len(self._tracked)
            remaining = deadline - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tracked_done.wait(), timeout=max(0.0, min(stall_s, remaining)))
            if self.closed_reason is not None and self._tracked:
                raise RuntimeError(f"watcher stopped with {len(self._tracked)} tasks open: {self.closed_reason}")
            if self._tracked and (len(self._tracked) == before or time.monotonic() >= deadline):
                why = f"none ended for {stall_s:.0f}s" if len(self._tracked) == before else f"after {timeout_s:.0f}s"
                raise TimeoutError(f"{len(self._tracked)} tasks not ended ({why})")

    async def wait_ended(self, task_id: str, timeout_s: float) -> float:
        """The perf_counter time the task's terminal status arrived."""
        if task_id in self.ended_at:
            return self.ended_at[task_id]
        fut = self._waiters.setdefault(task_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(fut, timeout=timeout_s)

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._conn is not None:
            await self._conn.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


class ProbeAgent:
    """A minimal agent that records when each `task/submit` arrives, then accepts and completes it at once."""

    def __init__(self, ws_url: str, agent_id: str, agent_token: str) -> None:
        self._url = f"{ws_url}?{urlencode({'role': 'agent', 'agent_id': agent_id, 'agent_token': agent_token})}"
        self._conn: ClientConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.received_at: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self.errors: list[dict[str, Any]] = []

    async def start(self) -> None:
        self._conn = await connect(self._url, max_size=1 << 20, open_timeout=15)
        auth = await _expect_auth_ok(self._conn, "probe agent")
        interval = float(auth.get("heartbeatIntervalS") or 5.0)
        self._tasks.add(asyncio.create_task(self._read()))
        self._tasks.add(asyncio.create_task(self._heartbeat(interval)))

    async def _heartbeat(self, interval_s: float) -> None:
        assert self._conn is not None
        while True:
            await self._conn.send(frame("heartbeat", {"running": 0, "capacity": 1})[1])
            await asyncio.sleep(interval_s)

    async def _read(self) -> None:
        assert self._conn is not None
        async for raw in self._conn:
            now = time.perf_counter()
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "task/submit":
                payload = msg["payload"]
                task_id, attempt = str(payload["taskId"]), int(payload["attempt"])
                self.received_at.setdefault(task_id, now)
                waiter = self._waiters.pop(task_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)
                ref = {"taskId": task_id, "attempt": attempt}
                await self._conn.send(frame("task/accept", ref)[1])
                await self._conn.send(frame("task/result", {**ref, "output": {}})[1])
            elif kind == "error":
                self.errors.append(msg["payload"])
                logger.warning("probe agent got an error frame: %s", msg["payload"])

    async def wait_received(self, task_id: str, timeout_s: float) -> float:
        if task_id in self.received_at:
            return self.received_at[task_id]
        fut = self._waiters.setdefault(task_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(fut, timeout=timeout_s)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._conn is not None:
            await self._conn.close()
