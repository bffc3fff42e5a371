"""/ws across reconnects and replicas: fan-out through Redis between two API servers, inbox redelivery,
a short agent reconnect that keeps its running task, and replay from the database once Redis'
bounded history is gone.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from api.ws.control import publish_control
from protocol.messages import Subscribe, TaskAccept, TaskProgress, TaskResult
from scheduler.keys import Keys
from tests.integration.api.test_ws_support import WAIT_S, ServerThread, Stack, payload, stack

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ("stack",)

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


def _is_done(frame: object) -> bool:
    return getattr(frame, "type", None) == "task/status" and payload(frame)["status"] == "done"  # type: ignore[arg-type]


@pytest.fixture
async def second_replica(stack: Stack) -> AsyncIterator[ServerThread]:
    """Another API process on the same database and Redis prefix."""
    replica = ServerThread(stack.settings)
    await asyncio.to_thread(replica.start)
    try:
        yield replica
    finally:
        await asyncio.to_thread(replica.stop)


async def test_events_and_control_messages_cross_replicas(stack: Stack, second_replica: ServerThread) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.agent_peer(agent_id, token)  # on replica 1
    task_id = await stack.submit(owner, agent_id=agent_id)

    remote_url = second_replica.http_url.replace("http://", "ws://") + "/ws"
    original = stack.server
    stack.server = second_replica
    try:
        assert stack.ws_url == remote_url
        watcher = await stack.client_peer(owner)  # on replica 2
    finally:
        stack.server = original
    await watcher.send(Subscribe(task_id=task_id, last_seq=0))

    await stack.dispatch()
    attempt = payload(await agent.recv_type("task/submit"))["attempt"]
    await agent.send(TaskAccept(task_id=task_id, attempt=attempt))
    await agent.recv_type("ack")
    await agent.send(TaskProgress(task_id=task_id, attempt=attempt, message="half way"))
    await agent.send(TaskResult(task_id=task_id, attempt=attempt, output=None))
    await agent.recv_type("ack")

    frames = await watcher.recv_until(_is_done)
    seqs = [payload(f)["seq"] for f in frames[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [f.type for f in frames[1:]].count("task/progress") == 1

    # A revocation published anywhere closes the socket wherever it is.
    await publish_control(stack.redis, stack.settings.redis.prefix, "agent_revoked", agent_id)
    assert await agent.closed_with() == 1008


async def test_submit_not_accepted_before_a_disconnect_is_delivered_again(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    first = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    await stack.dispatch()
    submit = payload(await first.recv_type("task/submit"))
    await first.close()

    second = await stack.agent_peer(agent_id, token)
    again = payload(await second.recv_type("task/submit"))
    assert (again["taskId"], again["attempt"]) == (task_id, submit["attempt"])
    ref = await second.send(TaskAccept(task_id=task_id, attempt=again["attempt"]))
    ack = await second.recv_type("ack", "error")
    assert payload(ack) == {"ref": ref}


async def test_short_reconnect_keeps_the_running_task(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    first = await stack.agent_peer(agent_id, token)
    task_id = await stack.submit(owner, agent_id=agent_id)
    await stack.dispatch()
    attempt = payload(await first.recv_type("task/submit"))["attempt"]
    await first.send(TaskAccept(task_id=task_id, attempt=attempt))
    await first.recv_type("ack")
    await first.close()

    second = await stack.agent_peer(agent_id, token)
    await stack.dispatch()  # nothing to requeue: the lease is still alive
    ref = await second.send(TaskResult(task_id=task_id, attempt=attempt, output="kept"))
    ack = await second.recv_type("ack", "error")
    assert payload(ack) == {"ref": ref}
    row = await stack.task_row(task_id)
    assert row.status == "done"
    assert row.attempt == attempt


async def test_replay_reads_the_database_once_redis_history_is_gone(stack: Stack) -> None:
    from api.db.models.tasks import Task
    from api.tasks.history import read_events

    owner = await stack.person()
    agent, _agent_id, task_id, attempt = await stack.running_task(owner)
    await agent.send(TaskProgress(task_id=task_id, attempt=attempt, data={"tokens": 3}, message="m"))
    await agent.send(TaskResult(task_id=task_id, attempt=attempt, output="x"))
    await agent.recv_type("ack")

    # Wait for the recorder to store every status (queued, assigned, running, done). Progress is
    # live-only: Redis replays it while it holds the task's history, the database does not keep it.
    deadline = time.monotonic() + WAIT_S
    while True:
        async with stack.db() as session:
            row = await session.get(Task, task_id)
            stored = len(await read_events(session, row, limit=100)) if row is not None else 0
        if stored == 4:
            break
        assert time.monotonic() < deadline, f"recorder stored {stored} of 4 events"
        await asyncio.sleep(0.05)
    await stack.redis.delete(Keys(stack.settings.redis.prefix).history(task_id))

    watcher = await stack.client_peer(owner)
    await watcher.send(Subscribe(task_id=task_id, last_seq=1))
    frames = await watcher.recv_until(_is_done)
    assert frames[0].type == "ack"
    events = [payload(f) for f in frames[1:]]
    assert [e["seq"] for e in events] == [2, 3, 5]
    assert [e.get("status") for e in events] == ["assigned", "running", "done"]
