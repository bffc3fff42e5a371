"""A real worker runs as many tasks at once as the server's record of its agent says, and logs which number."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.e2e.stack import Stack, wait_until

pytestmark = pytest.mark.e2e


def _peak_overlap(tasks: list[dict[str, Any]]) -> int:
    """Most tasks whose [startedAt, finishedAt] intervals (as the server recorded them) overlap at once."""
    edges: list[tuple[dt.datetime, int]] = []
    for task in tasks:
        edges.append((dt.datetime.fromisoformat(task["startedAt"]), 1))
        edges.append((dt.datetime.fromisoformat(task["finishedAt"]), -1))
    peak = current = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        current += step
        peak = max(peak, current)
    return peak


def test_the_agent_record_beats_a_higher_local_setting_and_the_worker_says_so(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["conc8"], concurrency=8, name="conc8")
    worker = stack.start_worker(agent_id, token, concurrency=16, name="worker-conc8")
    said = "concurrency 8 (server record; TASKYARD_WORKER_CONCURRENCY=16 ignored)"
    wait_until(lambda: said in worker.log(), timeout_s=30, what="the worker's concurrency line")

    tasks = [{"type": "sleep", "input": {"seconds": 3}, "capabilities": ["conc8"]} for _ in range(20)]
    ids = [task["id"] for task in stack.submit_batch(admin, tasks)]
    wait_until(
        lambda: all(stack.task(admin, task_id)["status"] == "done" for task_id in ids), timeout_s=60, what="20 done"
    )
    assert _peak_overlap([stack.task(admin, task_id) for task_id in ids]) == 8
    assert worker.log().count("concurrency ") == 1  # said once


def test_a_record_above_the_old_default_is_used_in_full_when_no_local_cap_is_set(stack: Stack) -> None:
    """Before, the worker kept 16 slots of its own: 24 sent tasks never ran together."""
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["conc24"], concurrency=24, name="conc24")
    worker = stack.start_worker(agent_id, token, name="worker-conc24", concurrency=None)
    wait_until(lambda: "concurrency 24 (server record)" in worker.log(), timeout_s=30, what="the concurrency line")

    tasks = [{"type": "sleep", "input": {"seconds": 6}, "capabilities": ["conc24"]} for _ in range(24)]
    ids = [task["id"] for task in stack.submit_batch(admin, tasks)]
    wait_until(
        lambda: stack.count_by_status(admin).get("running", 0) == 24, timeout_s=30, what="24 tasks running at once"
    )
    wait_until(
        lambda: all(stack.task(admin, task_id)["status"] == "done" for task_id in ids), timeout_s=60, what="24 done"
    )
    assert _peak_overlap([stack.task(admin, task_id) for task_id in ids]) == 24
