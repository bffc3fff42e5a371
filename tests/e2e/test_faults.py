"""Faults through real processes: dead agents, dead schedulers, an emptied Redis, cancel, retry, timeout."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.scripted_agent import ScriptedAgent
from tests.e2e.stack import RECOVERY_BOUND_S, Stack, wait_until

pytestmark = pytest.mark.e2e

TERMINAL = {"done", "failed", "canceled"}


def _statuses(stack: Stack, token: str, ids: list[str]) -> dict[str, str]:
    wanted = set(ids)
    return {t["id"]: t["status"] for t in stack.tasks(token) if t["id"] in wanted}


def _attempt_events(task: dict) -> list[dict]:
    return [e for e in task.get("events") or [] if e.get("type") == "task/status"]


@pytest.mark.timeout(180)
def test_kill_9_agent_requeues_its_running_tasks_which_finish_once_elsewhere(stack: Stack) -> None:
    admin = stack.create_admin()
    a_id, a_token = stack.create_agent(capabilities=["slow"], concurrency=3, name="A")
    worker_a = stack.start_worker(a_id, a_token, concurrency=3, name="worker-A")
    ids = [
        stack.submit(
            admin, type="sleep", input={"seconds": 3, "progressEvery": 0.2}, capabilities=["slow"], maxAttempts=3
        )["id"]
        for _ in range(3)
    ]
    wait_until(
        lambda: (
            all(s == "running" for s in _statuses(stack, admin, ids).values())
            and len(_statuses(stack, admin, ids)) == 3
        ),
        timeout_s=20,
        what="3 tasks running on A",
    )
    b_id, b_token = stack.create_agent(capabilities=["slow"], concurrency=3, name="B")
    stack.start_worker(b_id, b_token, concurrency=3, name="worker-B")

    stack.kill(worker_a, signal.SIGKILL)
    wait_until(
        lambda: all(stack.task(admin, i)["attempt"] >= 2 for i in ids),
        timeout_s=RECOVERY_BOUND_S,
        what="requeue within the recovery bound",
    )
    wait_until(lambda: set(_statuses(stack, admin, ids).values()) == {"done"}, timeout_s=30, what="done on B")
    for task_id in ids:
        task = stack.task(admin, task_id)
        assert task["agentId"] == b_id
        assert task["attempt"] == 2
        done_events = [e for e in _attempt_events(task) if e.get("status") == "done"]
        assert len(done_events) == 1


@pytest.mark.timeout(180)
def test_scheduler_killed_and_restarted_mid_run_loses_nothing(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["k"], concurrency=20, name="k")
    agent = ScriptedAgent(stack.api_url, agent_id, token, name="k", hold_s=0.01).start()
    try:
        scheduler = stack.procs[1]
        ids = [t["id"] for t in stack.submit_batch(admin, [{"type": "noop", "input": {}, "capabilities": ["k"]}] * 400)]
        wait_until(lambda: len(agent.finished) >= 50, timeout_s=30, what="some progress")
        stack.kill(scheduler, signal.SIGKILL)
        more = [
            t["id"] for t in stack.submit_batch(admin, [{"type": "noop", "input": {}, "capabilities": ["k"]}] * 100)
        ]
        stack.start_scheduler(name="scheduler-restarted")
        everything = ids + more
        wait_until(
            lambda: set(_statuses(stack, admin, everything).values()) == {"done"},
            timeout_s=60,
            what="all 500 done after the restart",
        )
        assert len({key[0] for key in agent.finished}) == 500
    finally:
        agent.stop()


@pytest.mark.timeout(180)
def test_redis_emptied_mid_run_rebuilds_every_unfinished_task(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["r"], concurrency=5, name="r")
    worker = stack.start_worker(agent_id, token, concurrency=5, name="worker-r")
    ids = [
        t["id"]
        for t in stack.submit_batch(admin, [{"type": "sleep", "input": {"seconds": 0.2}, "capabilities": ["r"]}] * 60)
    ]
    wait_until(
        lambda: list(_statuses(stack, admin, ids).values()).count("done") >= 5,
        timeout_s=30,
        what="a few done before the flush",
    )

    stack.restart_redis_empty(down_s=1.0)

    wait_until(
        lambda: set(_statuses(stack, admin, ids).values()) == {"done"},
        timeout_s=90,
        what="every accepted task done after Redis came back empty",
    )
    assert worker.alive()


def test_cancel_queued_and_running(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["cx"], concurrency=1, name="cx")
    queued = stack.submit(admin, type="sleep", input={"seconds": 30}, capabilities=["nobody-has-this"])["id"]
    with stack.http(admin) as client:
        assert client.post(f"/api/tasks/{queued}/cancel").status_code == 200
    assert stack.task(admin, queued)["status"] == "canceled"

    stack.start_worker(agent_id, token, concurrency=1, name="worker-cx")
    running = stack.submit(admin, type="sleep", input={"seconds": 30}, capabilities=["cx"])["id"]
    wait_until(lambda: stack.task(admin, running)["status"] == "running", timeout_s=20, what="running")
    with stack.http(admin) as client:
        assert client.post(f"/api/tasks/{running}/cancel").status_code == 200
        wait_until(lambda: stack.task(admin, running)["status"] == "canceled", timeout_s=10, what="canceled")
        # A terminal task cannot be canceled again.
        again = client.post(f"/api/tasks/{running}/cancel")
        assert again.status_code == 409
        assert again.json()["error"] == "task_not_runnable"
    # The slot was freed: the next task runs on the same single-slot agent.
    follow = stack.submit(admin, type="noop", input={}, capabilities=["cx"])["id"]
    wait_until(lambda: stack.task(admin, follow)["status"] == "done", timeout_s=20, what="slot freed")


def test_retry_with_backoff_then_success(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["flaky"], concurrency=2, name="flaky")
    stack.start_worker(agent_id, token, concurrency=2, name="worker-flaky")
    task_id = stack.submit(admin, type="fail", input={"failUntilAttempt": 2}, capabilities=["flaky"], maxAttempts=3)[
        "id"
    ]
    wait_until(lambda: stack.task(admin, task_id)["status"] in TERMINAL, timeout_s=30, what="terminal")
    task = stack.task(admin, task_id)
    assert task["status"] == "done"
    assert task["attempt"] == 3
    assert task["result"] == {"attempt": 3}
    statuses = [e["status"] for e in _attempt_events(task)]
    assert statuses.count("scheduled") == 2  # two backoffs before the third attempt


def test_retries_exhausted_fail_and_timeout_fails(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["t"], concurrency=2, name="t")
    stack.start_worker(agent_id, token, concurrency=2, name="worker-t")
    hopeless = stack.submit(admin, type="fail", input={"failUntilAttempt": 10}, capabilities=["t"], maxAttempts=2)["id"]
    slow = stack.submit(
        admin, type="sleep", input={"seconds": 30}, capabilities=["t"], timeoutSeconds=1, maxAttempts=1
    )["id"]
    wait_until(
        lambda: stack.task(admin, hopeless)["status"] in TERMINAL and stack.task(admin, slow)["status"] in TERMINAL,
        timeout_s=30,
        what="both terminal",
    )
    first = stack.task(admin, hopeless)
    assert first["status"] == "failed"
    assert first["attempt"] == 2
    second = stack.task(admin, slow)
    assert second["status"] == "failed"
    assert second["error"]["error"] == "timeout"


@pytest.mark.timeout(120)
def test_sigterm_drain_finishes_short_tasks_and_hands_back_long_ones(stack: Stack) -> None:
    admin = stack.create_admin()
    a_id, a_token = stack.create_agent(capabilities=["d"], concurrency=5, name="A")
    worker_a = stack.start_worker(a_id, a_token, concurrency=5, name="worker-A")
    short = [stack.submit(admin, type="sleep", input={"seconds": 1}, capabilities=["d"])["id"] for _ in range(3)]
    long = [stack.submit(admin, type="sleep", input={"seconds": 60}, capabilities=["d"])["id"] for _ in range(2)]
    everything = short + long
    wait_until(
        lambda: list(_statuses(stack, admin, everything).values()).count("running") == 5,
        timeout_s=20,
        what="5 tasks running on A",
    )
    b_id, b_token = stack.create_agent(capabilities=["d"], concurrency=5, name="B")

    stack.kill(worker_a, signal.SIGTERM)  # drain timeout is 3 s in the test profile
    assert worker_a.popen.wait(timeout=15) == 0
    # The long ones were handed back at once (queued again), not left for the lease to expire.
    for task_id in long:
        task = stack.task(admin, task_id)
        assert task["status"] in ("queued", "scheduled"), task["status"]
    for task_id in short:
        task = stack.task(admin, task_id)
        assert (task["status"], task["attempt"], task.get("agentId")) == ("done", 1, a_id), task

    stack.start_worker(b_id, b_token, concurrency=5, name="worker-B")
    # B runs the handed-back tasks as their second attempt (they sleep 60 s: seeing B run them is enough).
    wait_until(
        lambda: all(
            stack.task(admin, t).get("agentId") == b_id and stack.task(admin, t)["status"] == "running" for t in long
        ),
        timeout_s=20,
        what="long tasks running on B",
    )
    for task_id in long:
        assert stack.task(admin, task_id)["attempt"] == 2
