"""The worker against a server that took the `batch` feature: it asks for it, writes what is ready in `batch`
frames, skips `task/accept` for quick tasks (the server implies it), accepts a quiet long task after a while,
and sends no heartbeat per finished task. Against a server that did not, nothing changes (test_agent.py)."""

from __future__ import annotations

import asyncio

from tests.unit.worker.fake_api import FakeApi
from tests.unit.worker.test_agent import Gate, gated_registry, make_settings, running
from worker import Agent
from worker.agent import IMPLIED_ACCEPT_S


async def test_quick_tasks_send_only_their_results_batched_without_heartbeats() -> None:
    gate = Gate()
    async with FakeApi(features=["batch"], heartbeat_interval_s=30.0) as api:
        agent = Agent(make_settings(api, concurrency=50), gated_registry(gate))
        async with running(agent):
            await api.wait_for(lambda: len(api.heartbeats()) >= 1)
            beats = len(api.heartbeats())
            await api.submit_batch([f"t{i}" for i in range(40)], "noop")
            await api.wait_for(lambda: len(api.frames("task/result")) == 40)
            assert api.handshakes[0].headers["X-Taskyard-Features"] == "batch"
            assert api.frames("task/accept") == []  # each result implied its accept
            assert api.batch_frames >= 1  # results ready at once left together
            assert len(api.heartbeats()) == beats  # no heartbeat per finished task (the interval is 30 s)


async def test_a_task_that_reports_nothing_for_a_while_still_accepts() -> None:
    gate = Gate()
    async with FakeApi(features=["batch"]) as api:
        agent = Agent(make_settings(api), gated_registry(gate))
        async with running(agent):
            await api.submit("slow", "long")
            await asyncio.sleep(IMPLIED_ACCEPT_S / 5)
            assert api.frames("task/accept", "slow") == []
            await api.wait_for(lambda: bool(api.frames("task/accept", "slow")), timeout_s=IMPLIED_ACCEPT_S * 10)
            # A task whose first progress goes out at once never sends one.
            await api.submit("chatty", "gated", {"x": 1})
            await gate.wait_active(1)
            gate.opened.set()
            await api.wait_for(lambda: bool(api.frames("task/result", "chatty")))
        assert api.task_types("chatty") == ["task/progress", "task/progress", "task/result"]
