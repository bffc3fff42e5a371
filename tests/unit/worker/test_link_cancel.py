"""A worker never hangs on a lost connection: cancellation paths and the watchdog.

The field failure: on Python 3.11 `asyncio.wait_for(event.wait(), t)` returns normally when the event is
set in the same loop step as the cancel arrives, so the heartbeat loop swallowed its cancel and `serve()`
waited on it forever (no reconnect, unacknowledged results never resent).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from typing import Any

import pytest

from protocol.messages import AuthOk, Heartbeat
from tests.unit.worker.fake_api import WAIT_S, FakeApi
from worker import Agent, Registry
from worker.errors import ConnectionLostError
from worker.link import Link, cancel_and_wait, wait_event
from worker.outbox import Outbox
from worker.settings import Secret, WorkerSettings


def _link() -> Link:
    return Link(Outbox(), on_frame=lambda _: None, heartbeat=Heartbeat, progress_backlog=8, resend_interval_s=30.0)


async def _race_cancel_with_set(event: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """Let `task` block on `event`, then set the event and cancel the task in the same loop step."""
    for _ in range(5):
        await asyncio.sleep(0)
    event.set()
    task.cancel()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12's wait_for no longer loses the cancel")
async def test_wait_for_on_311_loses_a_cancel_that_races_the_event() -> None:
    """The reproduction of the root cause: the old heartbeat wait returns instead of raising."""
    event = asyncio.Event()

    async def old_style_wait() -> str:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=30)
        return "returned"

    task = asyncio.create_task(old_style_wait())
    await _race_cancel_with_set(event, task)
    assert await asyncio.wait_for(task, WAIT_S) == "returned"  # the cancel is gone


async def test_wait_event_raises_a_cancel_that_races_the_event() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(wait_event(event, 30))
    await _race_cancel_with_set(event, task)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)


async def test_wait_event_reports_set_and_timeout() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 30) is True


async def test_the_heartbeat_loop_stops_when_cancelled_as_a_job_finishes() -> None:
    link = _link()
    loop_task = asyncio.create_task(link._heartbeats())
    await _race_cancel_with_set(link._heartbeat_due, loop_task)  # `heartbeat_now()` from a finishing job
    done, _ = await asyncio.wait({loop_task}, timeout=WAIT_S)
    assert loop_task in done
    assert loop_task.cancelled()


async def test_cancel_and_wait_cancels_again_a_task_that_swallowed_its_cancel() -> None:
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancels += 1
                if cancels >= 2:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), WAIT_S)
    assert task.cancelled()
    assert cancels == 2


async def test_cancel_and_wait_leaves_behind_a_task_that_never_stops(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)

    task = asyncio.create_task(immortal(), name="immortal")
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, abandon_after_s=0.3), WAIT_S)
    assert not task.done()
    assert "left behind: immortal" in caplog.text
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=WAIT_S)


class _DroppingConnection:
    """A connection whose socket dies while the heartbeat is due (a job just finished)."""

    def __init__(self, link: Link) -> None:
        self.auth = AuthOk(
            role="agent", subject_id="a", session_id="s", heartbeat_interval_s=30.0, heartbeat_timeout_s=90.0
        )
        self._link = link
        self.sent: list[bytes] = []

    async def recv(self) -> str:
        for _ in range(3):
            await asyncio.sleep(0)
        self._link.heartbeat_now()
        raise ConnectionLostError("connection closed (code 1006)")

    async def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def close(self) -> None:
        return None


async def test_serve_returns_when_the_socket_dies_as_a_job_finishes() -> None:
    for _ in range(20):  # the race depends on loop order: try it many times
        link = _link()
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(link.serve(_DroppingConnection(link)), WAIT_S)  # type: ignore[arg-type]
        assert not link.is_up


async def test_the_watchdog_calls_on_hang_when_the_link_is_silent() -> None:
    hung = threading.Event()
    async with FakeApi() as api:
        settings = WorkerSettings(
            url=api.url, agent_id=api.agent_id, agent_token=Secret(api.token), watchdog_s=0.5, backoff_max_s=0.1
        )
        agent: Agent[Any] = Agent(settings, Registry(), on_hang=hung.set)
        run = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(agent.connected.wait(), WAIT_S)
            # The fake API sends one heartbeat, then nothing: past the bound the link counts as hung.
            assert await asyncio.to_thread(hung.wait, WAIT_S)
        finally:
            agent.stop()
            agent.stop()
            await asyncio.wait_for(run, WAIT_S)


async def test_the_watchdog_stays_quiet_while_the_server_heartbeats() -> None:
    hung = threading.Event()
    async with FakeApi() as api:
        settings = WorkerSettings(
            url=api.url, agent_id=api.agent_id, agent_token=Secret(api.token), watchdog_s=0.5, backoff_max_s=0.1
        )
        agent: Agent[Any] = Agent(settings, Registry(), on_hang=hung.set)
        run = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(agent.connected.wait(), WAIT_S)
            for _ in range(20):  # 2 s of server heartbeats, four times the bound
                await api.send(Heartbeat(interval=0.05))
                await asyncio.sleep(0.1)
            assert not hung.is_set()
        finally:
            agent.stop()
            agent.stop()
            await asyncio.wait_for(run, WAIT_S)


async def test_the_watchdog_catches_a_blocked_event_loop() -> None:
    """A handler that blocks the loop stops heartbeats and everything else; the watchdog's thread still runs."""
    hung = threading.Event()
    async with FakeApi() as api:
        settings = WorkerSettings(
            url=api.url, agent_id=api.agent_id, agent_token=Secret(api.token), watchdog_s=0.3, backoff_max_s=0.1
        )
        agent: Agent[Any] = Agent(settings, Registry(), on_hang=hung.set)
        run = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(agent.connected.wait(), WAIT_S)
            deadline = time.monotonic() + WAIT_S
            while not hung.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)  # blocks the event loop, as a misbehaving synchronous handler would
            assert hung.is_set()
        finally:
            agent.stop()
            agent.stop()
            await asyncio.wait_for(run, WAIT_S)
