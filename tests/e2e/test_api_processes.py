"""`taskyard api` with several processes on one port: each is a full replica (its own recorder and agent
connections), tasks submitted over separate connections all finish once with their whole history, and a
SIGTERM to the command stops every process it spawned."""

from __future__ import annotations

import signal
import subprocess

import httpx
import psutil
import pytest
import redis

from scheduler.keys import RECORDER_GROUP, Keys
from tests.e2e.conftest import StackFactory
from tests.e2e.stack import wait_until

pytestmark = pytest.mark.e2e

PROCESSES = 2


def _recorder_pids(redis_url: str, prefix: str) -> set[int]:
    """The pids in the recorder consumers' names (`host-pid-random`): one consumer per API process that read."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        consumers = client.xinfo_consumers(Keys(prefix).events(), RECORDER_GROUP)
    except redis.ResponseError:
        return set()  # no stream or group yet
    finally:
        client.close()
    return {int(consumer["name"].rsplit("-", 2)[1]) for consumer in consumers}


def _spawned(pid: int) -> set[int]:
    """The server processes the command spawned (not multiprocessing's helpers)."""
    return {
        child.pid for child in psutil.Process(pid).children() if "resource_tracker" not in " ".join(child.cmdline())
    }


def test_api_processes_share_one_port_and_stop_together(make_stack: StackFactory, e2e_database_url: str) -> None:
    if e2e_database_url.startswith("sqlite"):
        pytest.skip("several API processes need PostgreSQL (not reachable here)")
    stack = make_stack(TASKYARD_API_PROCESSES=str(PROCESSES))
    api = next(proc for proc in stack.procs if proc.name == "api")
    children = wait_until(
        lambda: _spawned(api.popen.pid) if len(_spawned(api.popen.pid)) == PROCESSES else None,
        timeout_s=30,
        what=f"{PROCESSES} API processes",
    )

    admin = stack.create_admin()
    ids = []
    for worker_index in range(PROCESSES):
        agent_id, token = stack.create_agent(capabilities=["multi"], concurrency=4, name=f"w{worker_index}")
        stack.start_worker(agent_id, token, name=f"worker-{worker_index}")
    for n in range(40):
        # A client of its own per submit: a new connection, which the kernel gives to either process.
        with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {admin}"}, timeout=10) as http:
            answer = http.post("/api/tasks", json={"type": "echo", "input": {"n": n}, "capabilities": ["multi"]})
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])

    def all_done() -> bool:
        return all(stack.task(admin, task_id)["status"] == "done" for task_id in ids)

    wait_until(all_done, timeout_s=60, what="40 tasks done")
    for n, task_id in enumerate(ids):
        task = stack.task(admin, task_id)
        assert task["result"] == {"n": n}, task
        statuses = [e["status"] for e in sorted(task["events"], key=lambda e: e["seq"]) if e["type"] == "task/status"]
        assert statuses == ["queued", "assigned", "running", "done"], task["events"]

    # Every spawned process ran its own recorder: one consumer per process, named by its pid.
    wait_until(
        lambda: _recorder_pids(stack.redis_url, stack.prefix) == children,
        timeout_s=30,
        what=f"a recorder in each of the {PROCESSES} API processes {children}",
    )

    api.popen.send_signal(signal.SIGTERM)  # the command only, as a supervisor would
    try:
        api.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the API command did not stop on SIGTERM: {api.log()[-3000:]}")
    wait_until(lambda: not any(psutil.pid_exists(pid) for pid in children), timeout_s=10, what="its processes gone")
