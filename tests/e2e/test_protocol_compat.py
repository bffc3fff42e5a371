"""An agent speaking the protocol as first documented (accept, progress, result, one task per frame) and our
worker (batches, implied accepts, no heartbeat per finished task) side by side on one API: every task gets
exactly one recorded result and a complete history, every status and the result in order."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.e2e.scripted_agent import ScriptedAgent
from tests.e2e.stack import Stack, wait_until

pytestmark = pytest.mark.e2e

PER_KIND = 12


def _history(stack: Stack, token: str, task_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = stack.task(token, task_id)["events"] or []
    return sorted(events, key=lambda e: e["seq"])


def _statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in events if e["type"] == "task/status"]


def _check_history(events: list[dict[str, Any]], agent_id: str) -> None:
    """Numbered in order from 1 (progress is kept for live replay only, so its seqs may be missing from the
    stored history); the statuses of one clean attempt, in order, on that agent; progress (what the history
    keeps of it) only while running."""
    seqs = [e["seq"] for e in events]
    assert seqs[0] == 1, events
    assert all(a < b for a, b in itertools.pairwise(seqs)), events
    assert _statuses(events) == ["queued", "assigned", "running", "done"], events
    position = {e["status"]: i for i, e in enumerate(events) if e["type"] == "task/status"}
    for i, event in enumerate(events):
        assert event["attempt"] == (0 if event.get("status") == "queued" else 1), events
        if event["type"] == "task/progress":
            assert position["running"] < i < position["done"], events
    assert all(e.get("agentId") == agent_id for e in events if e.get("status") in ("assigned", "running", "done"))


def test_an_old_style_agent_and_our_worker_on_one_api(stack: Stack) -> None:
    """Mixed on one queue and pinned to each; quick tasks (the worker's result implies the accept), tasks
    reporting progress first (the progress implies it), and the old agent's explicit accepts."""
    admin = stack.create_admin()
    old_id, old_token = stack.create_agent(capabilities=["compat"], concurrency=4, name="old-style")
    new_id, new_token = stack.create_agent(capabilities=["compat"], concurrency=4, name="new-worker")
    old = ScriptedAgent(stack.api_url, old_id, old_token, name="old-style", progress=2).start()
    worker = stack.start_worker(new_id, new_token, concurrency=4, name="new-worker")
    try:
        # Some pinned to each (both paths surely run), the rest to whoever is free.
        to_old = [{"type": "echo", "input": {"n": i}, "agentId": old_id} for i in range(PER_KIND)]
        quick = [{"type": "echo", "input": {"n": i}, "agentId": new_id} for i in range(PER_KIND)]
        # A task that reports progress before its result: the progress implies the accept.
        slow = [
            {"type": "sleep", "input": {"seconds": 0.3, "progressEvery": 0.1}, "agentId": new_id}
            for _ in range(PER_KIND // 2)
        ]
        shared = [{"type": "echo", "input": {"n": i}, "capabilities": ["compat"]} for i in range(2 * PER_KIND)]
        created = stack.submit_batch(admin, to_old + quick + slow + shared)
        ids = [t["id"] for t in created]

        def all_recorded() -> bool:
            return all("done" in _statuses(_history(stack, admin, task_id)) for task_id in ids)

        wait_until(all_recorded, timeout_s=90, what=f"every task done in its history {old.errors}")
        assert worker.alive(), worker.log()

        old_ran = {task_id for task_id, _ in old.finished}
        for task_id in ids:
            task = stack.task(admin, task_id)
            assert (task["status"], task["attempt"]) == ("done", 1), task
            ran_on = old_id if task_id in old_ran else new_id
            events = _history(stack, admin, task_id)
            _check_history(events, ran_on)
            # One result, the one the agent that ran it produced.
            if ran_on == old_id:
                assert task["result"]["agent"] == "old-style", task
            elif task_id in ids[2 * PER_KIND : 2 * PER_KIND + len(slow)]:
                assert task["result"] == {"sleptS": 0.3}, task
            else:
                assert task["result"] == created[ids.index(task_id)]["input"], task
        assert set(ids[:PER_KIND]) <= old_ran
        assert not (set(ids[PER_KIND : 2 * PER_KIND + len(slow)]) & old_ran)
        assert old.errors == []
        # The old-style agent's frames were each answered, none refused.
        assert len(old.finished) == len(old_ran) >= PER_KIND
    finally:
        old.stop()
        stack.kill(worker)
