"""What a reconnecting agent tells the server: unacknowledged outcomes count as running, and a cancel
never drops an outcome already sent (its commit may have died with an API replica)."""

from __future__ import annotations

from typing import Any

from protocol.messages import TaskCancel, TaskRef
from tests.unit.worker.fake_api import FakeApi
from tests.unit.worker.test_agent import Gate, gated_registry, make_settings, running
from worker import Agent


async def test_heartbeats_list_outcomes_waiting_for_their_ack() -> None:
    async with FakeApi(auto_ack=False) as api:
        agent: Agent[Any] = Agent(make_settings(api), gated_registry(Gate()))
        async with running(agent):
            await api.submit("t1", "noop")
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
            await api.drop()  # the replica is gone before the ack: the first heartbeat after it lists t1
            await api.wait_for(lambda: bool(_heartbeats_on(api, 2)))
            first_after = _heartbeats_on(api, 2)[0]
            assert first_after.running == 0  # nothing runs ...
            assert first_after.running_tasks == [TaskRef(task_id="t1", attempt=1)]  # ... but its outcome waits
            await api.wait_for(lambda: any(r.conn == 2 for r in api.frames("task/result", "t1")))
            await api.ack(api.frames("task/result", "t1")[-1])
            await api.wait_for(lambda: api.heartbeats()[-1].running_tasks == [])


async def test_a_cancel_does_not_drop_an_outcome_already_sent() -> None:
    async with FakeApi(auto_ack=False) as api:
        agent: Agent[Any] = Agent(make_settings(api), gated_registry(Gate()))
        async with running(agent):
            await api.submit("t1", "noop")
            await api.wait_for(lambda: bool(api.frames("task/result", "t1")))
            await api.send(TaskCancel(task_id="t1", attempt=1, reason="stale attempt"))
            await api.drop()
            # Resent on the next connection: only the server's answer settles it.
            await api.wait_for(lambda: any(r.conn == 2 for r in api.frames("task/result", "t1")))


def _heartbeats_on(api: FakeApi, conn: int) -> list[Any]:
    return [r.frame.payload for r in api.received if r.conn == conn and r.frame.type == "heartbeat"]
