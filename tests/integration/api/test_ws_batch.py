"""The `batch` handshake feature and implied accepts on a real server (Redis, database, sockets).

An agent that asks for `batch` is told so in `auth/ok` (with its concurrency), gets several submits in one
`batch` frame, may answer with results in one `batch` frame and no `task/accept`: each item is acked by its
own id, and the history records `running` (the implied accept) before `done`. An agent that asks nothing
sees the protocol as before.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from protocol.envelope import encode_batch, encode_payload
from protocol.messages import Batch, Heartbeat, TaskRef, TaskResult, TaskSubmit
from tests.integration.api.test_ws_liveness import SPARE_SLOTS
from tests.integration.api.test_ws_support import WAIT_S, Peer, Stack, payload, stack

__all__ = ("stack",)

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


async def _batch_peer(stack: Stack, agent_id: str, token: str) -> tuple[Peer, dict[str, object]]:
    peer = await stack.open(
        f"role=agent&agent_id={agent_id}", {"Authorization": f"Bearer {token}", "X-Taskyard-Features": "batch,nope"}
    )
    first = await peer.recv()
    assert first.type == "auth/ok", first
    return peer, payload(first)


async def _submits(stack: Stack, peer: Peer, want: set[str]) -> tuple[dict[str, int], int]:
    """Submits of `want` (others ignored) -> attempts, and how many `batch` frames carried them."""
    await stack.dispatch()
    attempts: dict[str, int] = {}
    batches = 0
    async with asyncio.timeout(WAIT_S):
        while set(attempts) != want:
            frame = await peer.recv_type("task/submit", "batch")
            items = frame.payload.frames if isinstance(frame.payload, Batch) else None
            if items is None:
                submits = [frame.payload]
            else:
                batches += 1
                submits = [msgspec.json.decode(item.payload, type=TaskSubmit) for item in items]
            for submit in submits:
                assert isinstance(submit, TaskSubmit)
                if submit.task_id in want:
                    attempts[submit.task_id] = submit.attempt
    return attempts, batches


async def test_batch_agent_gets_batched_submits_and_finishes_without_accepts(stack: Stack) -> None:
    owner = await stack.person()
    count = 6
    agent_id, token = await stack.agent(owner, concurrency=count + SPARE_SLOTS)
    task_ids = {await stack.submit(owner, agent_id=agent_id) for _ in range(count)}
    peer, auth = await _batch_peer(stack, agent_id, token)
    assert auth["features"] == ["batch"]  # the unknown name is ignored
    assert auth["concurrency"] == count + SPARE_SLOTS

    attempts, batches = await _submits(stack, peer, task_ids)
    assert batches >= 1  # several submits ready at once travel in one frame

    # Every result in one frame, no accepts: each item is acked by its own id (the acks of results committed
    # together come back in `batch` frames too).
    items = {
        str(uuid.uuid4()): encode_payload(TaskResult(task_id=t, attempt=a, output={"t": t}))
        for t, a in attempts.items()
    }
    await peer.send_raw(encode_batch([("task/result", body, item_id) for item_id, body in items.items()]).decode())
    acked: set[str] = set()
    async with asyncio.timeout(WAIT_S):
        while acked != set(items):
            frame = await peer.recv_type("ack", "error", "batch")
            if isinstance(frame.payload, Batch):
                answers = [(item.type, msgspec.json.decode(item.payload)) for item in frame.payload.frames]
            else:
                answers = [(frame.type, payload(frame))]
            for kind, body in answers:
                assert kind == "ack", body
                acked.add(body["ref"])

    for task_id in task_ids:
        row = await stack.task_row(task_id)
        assert row.status == "done"
        statuses = [e.status for e in await stack.scheduler.history(task_id) if e.type == "task/status"]
        assert statuses == ["queued", "assigned", "running", "done"]


async def test_agent_asking_nothing_sees_no_features(stack: Stack) -> None:
    owner = await stack.person()
    agent_id, token = await stack.agent(owner, concurrency=2)
    peer = await stack.open(f"role=agent&agent_id={agent_id}", {"Authorization": f"Bearer {token}"})
    first = await peer.recv()
    assert first.type == "auth/ok"
    assert "features" not in payload(first)
    assert "concurrency" not in payload(first)


async def test_stale_attempt_checks_are_throttled_per_attempt(stack: Stack) -> None:
    """An attempt an agent keeps reporting is checked once per `STALE_RECHECK_S`, not per heartbeat."""
    owner = await stack.person()
    agent_id, token = await stack.agent(owner)
    agent = await stack.open(f"role=agent&agent_id={agent_id}", {"Authorization": f"Bearer {token}"})
    assert (await agent.recv()).type == "auth/ok"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for _ in range(3):
        await agent.send(Heartbeat(running=1, capacity=0, running_tasks=[TaskRef(task_id=first, attempt=1)]))
    await agent.send(
        Heartbeat(
            running=2, capacity=0, running_tasks=[TaskRef(task_id=first, attempt=1), TaskRef(task_id=second, attempt=1)]
        )
    )
    cancels = []
    async with asyncio.timeout(WAIT_S):
        while len(cancels) < 2:
            cancels.append(payload(await agent.recv_type("task/cancel"))["taskId"])
    assert cancels == [first, second]  # the first once, though reported four times
    with pytest.raises(TimeoutError):
        await agent.recv_type("task/cancel", timeout_s=1.0)
