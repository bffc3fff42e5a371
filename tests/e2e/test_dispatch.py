"""Dispatch through real processes: priority, capabilities, pinning, concurrency, multiple schedulers."""

from __future__ import annotations

import pytest

from tests.e2e.scripted_agent import ScriptedAgent
from tests.e2e.stack import Stack, wait_until

pytestmark = pytest.mark.e2e


def _all_done(stack: Stack, token: str, ids: list[str]) -> bool:
    wanted = set(ids)
    done = {t["id"] for t in stack.tasks(token, status="done")}
    return wanted <= done


def test_priority_order_then_fifo_within_a_priority(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["p"], concurrency=1, name="serial")
    plan = [(0, "a"), (5, "b"), (9, "c"), (5, "d"), (0, "e"), (9, "f")]
    created = {
        stack.submit(admin, type="noop", input={"n": name}, priority=prio, capabilities=["p"])["id"]: name
        for prio, name in plan
    }
    agent = ScriptedAgent(stack.api_url, agent_id, token, name="serial").start()
    try:
        wait_until(lambda: len(agent.finished) == len(plan), timeout_s=30, what=f"all six tasks {agent.errors}")
        order = [created[task_id] for task_id, _ in agent.received]
        assert order == ["c", "f", "b", "d", "a", "e"]
    finally:
        agent.stop()


def test_capabilities_pinning_and_a_task_nobody_can_run_waits(stack: Stack) -> None:
    admin = stack.create_admin()
    gpu_id, gpu_token = stack.create_agent(capabilities=["gpu", "llm"], concurrency=2, name="gpu")
    cpu_id, cpu_token = stack.create_agent(capabilities=["cpu"], concurrency=2, name="cpu")
    gpu = ScriptedAgent(stack.api_url, gpu_id, gpu_token, name="gpu").start()
    cpu = ScriptedAgent(stack.api_url, cpu_id, cpu_token, name="cpu").start()
    rare = None
    try:
        needs_gpu = [stack.submit(admin, type="noop", input={}, capabilities=["gpu"])["id"] for _ in range(5)]
        needs_both = [stack.submit(admin, type="noop", input={}, capabilities=["gpu", "llm"])["id"] for _ in range(3)]
        needs_cpu = [stack.submit(admin, type="noop", input={}, capabilities=["cpu"])["id"] for _ in range(5)]
        pinned = [stack.submit(admin, type="noop", input={}, agentId=cpu_id)["id"] for _ in range(3)]
        rare_id = stack.submit(admin, type="noop", input={}, capabilities=["quantum"])["id"]
        everything = needs_gpu + needs_both + needs_cpu + pinned
        wait_until(lambda: _all_done(stack, admin, everything), timeout_s=30, what="routable tasks done")

        gpu_got = {task_id for task_id, _ in gpu.received}
        cpu_got = {task_id for task_id, _ in cpu.received}
        assert set(needs_gpu + needs_both) <= gpu_got
        assert not (set(needs_gpu + needs_both) & cpu_got)
        assert set(needs_cpu + pinned) <= cpu_got
        assert not (set(needs_cpu + pinned) & gpu_got)
        # Nobody can run it, and it did not block anything behind it.
        assert stack.task(admin, rare_id)["status"] == "queued"

        rare_agent_id, rare_token = stack.create_agent(capabilities=["quantum"], concurrency=1, name="rare")
        rare = ScriptedAgent(stack.api_url, rare_agent_id, rare_token, name="rare").start()
        wait_until(lambda: stack.task(admin, rare_id)["status"] == "done", timeout_s=20, what="rare task done")
        assert stack.task(admin, rare_id)["agentId"] == rare_agent_id
    finally:
        for agent in (gpu, cpu, rare):
            if agent is not None:
                agent.stop()


def test_observed_concurrency_never_exceeds_the_agent_limit(stack: Stack) -> None:
    admin = stack.create_admin()
    agents = []
    for index, limit in enumerate((1, 3)):
        agent_id, token = stack.create_agent(capabilities=["c"], concurrency=limit, name=f"c{index}")
        agents.append((limit, ScriptedAgent(stack.api_url, agent_id, token, name=f"c{index}", hold_s=0.05).start()))
    try:
        ids = [t["id"] for t in stack.submit_batch(admin, [{"type": "noop", "input": {}, "capabilities": ["c"]}] * 60)]
        wait_until(lambda: _all_done(stack, admin, ids), timeout_s=60, what="60 tasks done")
        for limit, agent in agents:
            assert agent.max_running <= limit
        assert sum(len(agent.finished) for _, agent in agents) == 60
        # Least-loaded placement gives the wider agent real work.
        assert agents[1][1].max_running >= 2
    finally:
        for _, agent in agents:
            agent.stop()


@pytest.mark.timeout(300)
def test_two_schedulers_dispatch_each_task_exactly_once(stack: Stack) -> None:
    stack.start_scheduler(name="scheduler-2")
    admin = stack.create_admin()
    agents = []
    for index in range(4):
        agent_id, token = stack.create_agent(capabilities=["bulk"], concurrency=50, name=f"b{index}")
        agents.append(ScriptedAgent(stack.api_url, agent_id, token, name=f"b{index}").start())
    try:
        total = 2000
        ids = [
            t["id"]
            for t in stack.submit_batch(admin, [{"type": "noop", "input": {}, "capabilities": ["bulk"]}] * total)
        ]
        assert len(set(ids)) == total
        wait_until(lambda: sum(len(a.finished) for a in agents) >= total, timeout_s=120, what="2,000 results")
        received = [key for agent in agents for key in agent.received]
        by_task: dict[str, int] = {}
        for task_id, _attempt in received:
            by_task[task_id] = by_task.get(task_id, 0) + 1
        assert set(by_task) == set(ids)
        assert max(by_task.values()) == 1, "a task was dispatched twice while every agent was alive"
        wait_until(lambda: _all_done(stack, admin, ids), timeout_s=60, what="all recorded done")
    finally:
        for agent in agents:
            agent.stop()


def test_an_agent_update_reaches_the_scheduler_without_a_reconnect(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["old"], concurrency=1, name="updatable")
    agent = ScriptedAgent(stack.api_url, agent_id, token, name="updatable", hold_s=1.0).start()
    try:
        task_id = stack.submit(admin, type="noop", input={}, capabilities=["new"])["id"]
        with stack.http(admin) as client:
            response = client.put(f"/api/agents/{agent_id}", json={"capabilities": ["new"], "concurrency": 3})
            assert response.status_code == 200
        wait_until(lambda: stack.task(admin, task_id)["status"] == "done", timeout_s=20, what="routed by new caps")
        # The wider concurrency applies too: three held tasks run at once on the same socket.
        ids = [t["id"] for t in stack.submit_batch(admin, [{"type": "noop", "input": {}, "capabilities": ["new"]}] * 3)]
        wait_until(lambda: _all_done(stack, admin, ids), timeout_s=30, what="three tasks done")
        assert agent.max_running == 3
        assert agent.errors == []  # one socket throughout: no reconnect was needed
    finally:
        agent.stop()
