"""Orphans come back in seconds and lost agents do not burn attempts, through real processes.

Bounds here are the documented ones (reconnect grace + 2 s, heartbeat timeout + 2 s), measured on the
scheduler's own state in Redis (the database row trails it).
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
import redis

from tests.e2e.conftest import StackFactory
from tests.e2e.stack import HEARTBEAT_TIMEOUT_S, Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _redis_task(stack: Stack, task_id: str) -> dict[str, str]:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        raw = client.hgetall(f"{stack.prefix}:task:{task_id}")
    finally:
        client.close()
    return {k.decode(): v.decode() for k, v in raw.items()}


def _taken_back(stack: Stack, task_id: str, agent_id: str) -> bool:
    """The task no longer runs its first attempt on `agent_id`."""
    task = _redis_task(stack, task_id)
    return task.get("agent") != agent_id or task.get("status") not in ("assigned", "running")


def _running_on(stack: Stack, admin: str, task_id: str, agent_id: str) -> dict[str, Any] | None:
    task = stack.task(admin, task_id)
    return task if task["status"] == "running" and task.get("agentId") == agent_id else None


def test_a_dropped_socket_is_requeued_within_grace_and_the_loss_costs_no_attempt(make_stack: StackFactory) -> None:
    """Lease 30 s, grace 2 s: only the closed socket's grace can bring the task back this soon."""
    grace_s = 2.0
    stack = make_stack(TASKYARD_API_HEARTBEAT_TIMEOUT_S="30", TASKYARD_API_RECONNECT_GRACE_S=str(grace_s))
    admin = stack.create_admin()
    a_id, a_token = stack.create_agent(capabilities=["loss"], concurrency=1, name="A")
    worker_a = stack.start_worker(a_id, a_token, concurrency=1, name="worker-A")
    task_id = stack.submit(admin, type="sleep", input={"seconds": 2}, capabilities=["loss"], maxAttempts=1)["id"]
    wait_until(lambda: _running_on(stack, admin, task_id, a_id), timeout_s=30, what="running on A")

    stack.kill(worker_a, signal.SIGKILL)  # the kernel closes its socket
    # Grace, then the scheduler's next sweep (0.25 s apart here); the rest is slack for a loaded 2-core box. Far
    # below the 30 s lease either way, so only the grace can explain it.
    wait_until(lambda: _taken_back(stack, task_id, a_id), timeout_s=grace_s + 4, what="requeued soon after the grace")
    assert _redis_task(stack, task_id)["losses"] == "1"

    # maxAttempts is 1, and the loss did not use it: the second agent runs it as attempt 2 and it is done.
    b_id, b_token = stack.create_agent(capabilities=["loss"], concurrency=1, name="B")
    stack.start_worker(b_id, b_token, concurrency=1, name="worker-B")
    wait_until(lambda: stack.task(admin, task_id)["status"] == "done", timeout_s=30, what="done on B")
    task = stack.task(admin, task_id)
    assert (task["attempt"], task["maxAttempts"], task["agentId"]) == (2, 1, b_id)
    assert task["result"] == {"sleptS": 2}


def test_a_silent_agent_is_requeued_within_its_heartbeat_timeout(stack: Stack) -> None:
    """SIGSTOP: the socket stays open, the heartbeats stop; the lease runs out."""
    admin = stack.create_admin()
    a_id, a_token = stack.create_agent(capabilities=["mute"], concurrency=1, name="A")
    worker_a = stack.start_worker(a_id, a_token, concurrency=1, name="worker-A")
    task_id = stack.submit(admin, type="sleep", input={"seconds": 30}, capabilities=["mute"], maxAttempts=1)["id"]
    wait_until(lambda: _running_on(stack, admin, task_id, a_id), timeout_s=30, what="running on A")
    stack.kill(worker_a, signal.SIGSTOP)
    try:
        wait_until(
            lambda: _taken_back(stack, task_id, a_id),
            timeout_s=HEARTBEAT_TIMEOUT_S + 2,
            what="requeued within the heartbeat timeout + 2 s",
        )
        assert _redis_task(stack, task_id)["losses"] == "1"
    finally:
        stack.kill(worker_a, signal.SIGCONT)
    # Thawed, A reconnects; the attempt it still runs is stale and it is told to drop it.
    wait_until(lambda: "agent connected" in worker_a.log().split("connection lost", 1)[-1], timeout_s=30)
    assert worker_a.alive()


def test_a_poison_task_is_stopped_by_its_loss_bound_not_its_attempts(stack: Stack) -> None:
    """`crash` kills every worker that runs it: after max_losses (3) it fails, with attempts to spare."""
    admin = stack.create_admin()
    workers = []
    for i in range(4):
        agent_id, token = stack.create_agent(capabilities=["poison"], concurrency=1, name=f"victim-{i}")
        workers.append(stack.start_worker(agent_id, token, concurrency=1, name=f"victim-{i}"))
    task_id = stack.submit(admin, type="crash", input={}, capabilities=["poison"], maxAttempts=10)["id"]
    wait_until(lambda: stack.task(admin, task_id)["status"] == "failed", timeout_s=60, what="poison task failed")
    task = stack.task(admin, task_id)
    assert task["attempt"] == 3
    assert _redis_task(stack, task_id)["losses"] == "3"
    # Three workers died on it; the fourth was never offered it again.
    assert sum(1 for w in workers if w.alive()) == 1


def test_a_reconnect_within_the_grace_keeps_the_running_task(make_stack: StackFactory) -> None:
    """The API restarts (SIGTERM, same port): its sockets close, the worker reconnects, the attempt stays."""
    stack = make_stack(TASKYARD_API_HEARTBEAT_TIMEOUT_S="60", TASKYARD_API_RECONNECT_GRACE_S="30")
    admin = stack.create_admin()
    a_id, a_token = stack.create_agent(capabilities=["keep"], concurrency=1, name="A")
    worker_a = stack.start_worker(a_id, a_token, concurrency=1, name="worker-A", TASKYARD_WORKER_BACKOFF_MAX_S="1")
    task_id = stack.submit(admin, type="sleep", input={"seconds": 8}, capabilities=["keep"], maxAttempts=3)["id"]
    wait_until(lambda: _running_on(stack, admin, task_id, a_id), timeout_s=30, what="running on A")
    api = stack.procs[0]
    port = stack.api_url.rsplit(":", 1)[1]
    stack.kill(api, signal.SIGTERM)
    stack.start_api(name="api-restarted", port=int(port))
    wait_until(lambda: worker_a.log().count("agent connected") >= 2, timeout_s=30, what="A reconnected")
    wait_until(lambda: stack.task(admin, task_id)["status"] == "done", timeout_s=60, what="done")
    task = stack.task(admin, task_id)
    assert (task["attempt"], task["agentId"], task["result"]) == (1, a_id, {"sleptS": 8})
    assert "losses" not in _redis_task(stack, task_id)
