"""An agent's liveness does not depend on how fast its frames are committed.

A real server, Redis and database; the database path of `task/result` is stalled (as a slow or
locked database would) while the agent keeps sending. The presence lease must keep being renewed
the whole time, whether the reader reads on past the stalled results (heartbeats handled at once)
or is held by its own backlog cap (renewed because the agent's frames wait on us, not the reverse).
Then: frames of one task are applied in arrival order while tasks run side by side.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

import api.ws.agent_chains as agent_chains
from api.tasks.service import TaskService
from protocol.messages import Heartbeat, Subscribe, TaskAccept, TaskProgress, TaskResult
from tests.integration.api.test_ws_support import WAIT_S, Peer, Stack, open_stack, payload, stack, ws_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from api.settings import ApiSettings

__all__ = ("stack",)

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


async def _beat(agent: Peer, interval_s: float) -> None:
    """What a live agent does: a heartbeat every interval, whatever the server is busy with."""
    while True:
        await agent.send(Heartbeat(running=0, capacity=0))
        await asyncio.sleep(interval_s)


SPARE_SLOTS = 8
"""Agent slots beyond the test's tasks: unpinned tasks other tests left in the shared database may be
re-enqueued by this app's reconciler and dispatched here too; they are ignored."""


async def _submits(stack: Stack, agent: Peer, task_ids: set[str]) -> dict[str, int]:
    """Dispatch and take the submits of `task_ids` (others ignored); task id -> attempt."""
    await stack.dispatch()
    attempts: dict[str, int] = {}
    while set(attempts) != task_ids:
        body = payload(await agent.recv_type("task/submit"))
        if body["taskId"] in task_ids:
            attempts[body["taskId"]] = int(body["attempt"])
    return attempts


async def _accepted(stack: Stack, agent: Peer, task_ids: set[str]) -> dict[str, int]:
    """Dispatch, take the submits of `task_ids`, accept each (waiting for the acks); task id -> attempt."""
    attempts = await _submits(stack, agent, task_ids)
    refs = {await agent.send(TaskAccept(task_id=t, attempt=a)) for t, a in attempts.items()}
    while refs:
        frame = await agent.recv_type("ack", "error")
        assert frame.type == "ack", frame
        refs.discard(payload(frame)["ref"])
    return attempts


@pytest.mark.parametrize("backlog_cap", [None, 3], ids=["reader-reads-on", "reader-held-by-its-backlog"])
async def test_lease_is_kept_while_results_wait_on_a_stalled_database(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, backlog_cap: int | None
) -> None:
    owner = await stack.person()
    count = 12
    agent_id, token = await stack.agent(owner, concurrency=count + SPARE_SLOTS)
    agent = await stack.agent_peer(agent_id, token)
    task_ids = {await stack.submit(owner, agent_id=agent_id) for _ in range(count)}
    attempts = await _accepted(stack, agent, task_ids)

    # The database stalls: no result commits until the test says so.
    unstalled = threading.Event()  # set from this loop, read on the server's
    original = TaskService.record_result

    async def stalled(self: TaskService, *args: Any, **kwargs: Any) -> Any:
        while not unstalled.is_set():
            await asyncio.sleep(0.02)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(TaskService, "record_result", stalled)
    if backlog_cap is not None:
        monkeypatch.setattr(agent_chains, "MAX_PENDING_FRAMES", backlog_cap)

    ws = stack.settings.ws
    refs = {await agent.send(TaskResult(task_id=t, attempt=a, output={"t": t})) for t, a in attempts.items()}
    beats = asyncio.create_task(_beat(agent, ws.heartbeat_interval_s))
    try:
        # Several heartbeat timeouts of stalled commits: at every look the lease is live, and it keeps
        # moving forward (bounded wait for that, never a fixed sleep).
        stalled_at_ms = int(time.time() * 1000)
        renewed_past_ms = stalled_at_ms + int(3 * ws.heartbeat_timeout_s * 1000)
        async with asyncio.timeout(WAIT_S + 3 * ws.heartbeat_timeout_s):
            while True:
                lease = await stack.redis.zscore(stack.scheduler.keys.agents(), agent_id)
                assert lease is not None, "the agent's presence is gone"
                assert int(lease) > int(time.time() * 1000), "the lease lapsed while the agent kept sending"
                if int(lease) >= renewed_past_ms:
                    break
                await asyncio.sleep(0.05)
        assert await stack.scheduler.is_online(agent_id)

        unstalled.set()
        while refs:
            frame = await agent.recv_type("ack", "error")
            assert frame.type == "ack", frame
            refs.discard(payload(frame)["ref"])
    finally:
        unstalled.set()
        beats.cancel()
        await asyncio.gather(beats, return_exceptions=True)
    for task_id in task_ids:
        row = await stack.task_row(task_id)
        assert row.status == "done", (task_id, row.status)


@pytest.fixture
async def unthrottled_stack(make_settings: Callable[..., ApiSettings]) -> AsyncIterator[Stack]:
    """Progress coalescing off (rate 0), so every progress frame is applied and can be checked."""
    async for running in open_stack(ws_settings(make_settings, TASKYARD_API_PROGRESS_RATE_PER_S=0)):
        yield running


async def test_frames_of_one_task_apply_in_arrival_order_while_tasks_run_side_by_side(
    unthrottled_stack: Stack,
) -> None:
    stack = unthrottled_stack
    assert stack.settings.ws.progress_rate_per_s == 0
    owner = await stack.person()
    count, steps = 6, 15
    agent_id, token = await stack.agent(owner, concurrency=count + SPARE_SLOTS)
    agent = await stack.agent_peer(agent_id, token)
    watcher = await stack.client_peer(owner)
    sub = await watcher.send(Subscribe(all=True))
    assert payload(await watcher.recv_type("ack")) == {"ref": sub}
    task_ids = {await stack.submit(owner, agent_id=agent_id) for _ in range(count)}
    attempts = await _submits(stack, agent, task_ids)

    # Everything back to back, the tasks interleaved: accept, progress 0..n-1, result, per task.
    outcome_refs: set[str] = set()
    for t, a in attempts.items():
        await agent.send(TaskAccept(task_id=t, attempt=a))
    for step in range(steps):
        for t, a in attempts.items():
            await agent.send(TaskProgress(task_id=t, attempt=a, data={"step": step}))
    for t, a in attempts.items():
        outcome_refs.add(await agent.send(TaskResult(task_id=t, attempt=a, output={"ok": True})))

    answered = 0
    while outcome_refs:
        frame = await agent.recv_type("ack", "error")
        # An accept applied after its result, or progress after it, would be refused here.
        assert frame.type == "ack", payload(frame)
        outcome_refs.discard(payload(frame)["ref"])
        answered += 1
    assert answered == 2 * count  # accepts and results, nothing refused

    steps_seen: dict[str, list[int]] = {t: [] for t in task_ids}
    done: set[str] = set()
    last_seq: dict[str, int] = {}
    async with asyncio.timeout(WAIT_S):
        while done != task_ids:
            frame = await watcher.recv_type("task/progress", "task/status")
            body = payload(frame)
            if body["taskId"] not in task_ids:
                continue
            assert body["seq"] > last_seq.get(body["taskId"], 0)
            last_seq[body["taskId"]] = body["seq"]
            if frame.type == "task/progress":
                steps_seen[body["taskId"]].append(body["data"]["step"])
            elif body["status"] == "done":
                done.add(body["taskId"])
    assert all(seen == list(range(steps)) for seen in steps_seen.values()), steps_seen
