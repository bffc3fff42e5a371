"""The recorder and the result path: Redis events -> database, idempotent and seq-ordered.

A task is submitted through the app, dispatched in-process (`SchedulerService.run_until_idle`), and
driven through accept/progress/result with the scheduler client the WebSocket layer would use.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from api.db.models.tasks import Task
from api.metrics import Metrics
from api.tasks.history import read_events
from api.tasks.recorder import Recorder
from api.tasks.service import TaskService
from protocol.errors import ErrorCode
from scheduler.types import AgentSpec
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_service_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis


async def dispatch_to_new_agent(env: Env, sched: Any, sched_service: Any, owner_id: str) -> str:
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    await sched.agent_online(AgentSpec(agent_id, owner_id, (), 4), lease_s=30)
    assert await sched_service.run_until_idle() >= 1
    return agent_id


async def task_row(sessionmaker: Any, task_id: str) -> Task:
    async with sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def event_rows(sessionmaker: Any, task_id: str) -> list[tuple[int, str, str | None]]:
    """The recorded history (statuses on the task row, stream pieces in task_events), oldest first."""
    async with sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        events = await read_events(session, task, limit=10_000)
        return [(e.seq, e.type, e.status) for e in events]


async def test_full_run_is_recorded_once_even_when_replayed(env: Env, sched, sched_service, sessionmaker) -> None:
    user = env.user()
    task = env.submit(user, {"type": "echo", "input": {"x": 1}})
    agent = await dispatch_to_new_agent(env, sched, sched_service, user.id)
    assert (await sched.accept(task["id"], 1, agent)).outcome == "ok"
    assert (
        await sched.progress(
            task["id"], 1, agent, b'{"taskId":"%s","attempt":1,"message":"half"}' % task["id"].encode()
        )
    ).outcome == "ok"

    async with sessionmaker() as session:
        recorded = await TaskService(session, sched).record_result(task["id"], 1, agent, {"answer": 42})
    assert recorded.ack is True
    assert recorded.duplicate is False

    metrics = Metrics()
    recorder = Recorder(sched, sessionmaker, consumer="test-recorder", metrics=metrics)
    # The statuses but the first, which the row holds from the INSERT (the progress is for watchers only).
    assert await recorder.drain() >= 3

    row = await task_row(sessionmaker, task["id"])
    assert row.status == "done"
    assert row.result == {"answer": 42}
    assert row.attempt == 1
    assert row.assigned_agent_id == agent
    assert row.started_at is not None
    assert row.finished_at is not None
    events = await event_rows(sessionmaker, task["id"])
    assert [e[2] for e in events if e[1] == "task/status"] == ["queued", "assigned", "running", "done"]
    # Every status in order; the progress event (seq 4) is live-only: Redis replays it, the database
    # does not keep it.
    assert [e[0] for e in events] == [1, 2, 3, 5]
    assert metrics.dispatch_latency.collect()[0].samples  # the histogram saw the assignment

    # Replay the whole history twice: one row per seq, nothing moves backwards.
    history = await sched.history(task["id"])
    await recorder.apply(history)
    await recorder.apply(history)
    assert await event_rows(sessionmaker, task["id"]) == events
    again = await task_row(sessionmaker, task["id"])
    assert (again.status, again.seq, again.result) == (row.status, row.seq, row.result)

    # A duplicate result frame is acknowledged as a duplicate and changes nothing.
    async with sessionmaker() as session:
        dup = await TaskService(session, sched).record_result(task["id"], 1, agent, {"answer": 0})
    assert (dup.ack, dup.duplicate) == (True, True)
    assert (await task_row(sessionmaker, task["id"])).result == {"answer": 42}

    # Through the API: the task carries its history.
    body = env.client.get(f"/api/tasks/{task['id']}", headers=user.headers).json()
    assert body["status"] == "done"
    assert body["result"] == {"answer": 42}
    assert body["agentId"] == agent
    assert [e["seq"] for e in body["events"]] == [e[0] for e in events]


async def test_stale_seq_does_not_move_the_row(env: Env, sched, sched_service, sessionmaker) -> None:
    user = env.user()
    task = env.submit(user)
    agent = await dispatch_to_new_agent(env, sched, sched_service, user.id)
    await sched.accept(task["id"], 1, agent)
    recorder = Recorder(sched, sessionmaker, consumer="test-recorder")
    await recorder.drain()
    row = await task_row(sessionmaker, task["id"])
    assert (row.status, row.seq) == ("running", 3)

    history = await sched.history(task["id"])
    assigned = next(e for e in history if e.status == "assigned")
    # The same seq again, and an older seq claiming a different status: both ignored for the row.
    await recorder.apply([assigned, msgspec.structs.replace(assigned, status="queued", entry_id="0-1")])
    row = await task_row(sessionmaker, task["id"])
    assert (row.status, row.seq) == ("running", 3)
    assert [e[0] for e in await event_rows(sessionmaker, task["id"])] == [1, 2, 3]


async def test_terminal_row_is_never_left(env: Env, sched, sessionmaker) -> None:
    user = env.user()
    task = env.submit(user)
    env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    history = await sched.history(task["id"])
    late = msgspec.structs.replace(history[-1], seq=history[-1].seq + 5, status="running", entry_id="0-9")
    await Recorder(sched, sessionmaker, consumer="test-recorder").apply([late])
    assert (await task_row(sessionmaker, task["id"])).status == "canceled"


async def test_result_refusals_are_not_acknowledged(env: Env, sched, sched_service, sessionmaker) -> None:
    user = env.user()
    task = env.submit(user)
    agent = await dispatch_to_new_agent(env, sched, sched_service, user.id)
    async with sessionmaker() as session:
        service = TaskService(session, sched)
        stale = await service.record_result(task["id"], 7, agent, {"x": 1})
        other = await service.record_result(task["id"], 1, "someone-else", {"x": 1})
        unknown = await service.record_result(str(uuid.uuid4()), 1, agent, {"x": 1})
    assert (stale.ack, stale.error) == (False, ErrorCode.STALE_ATTEMPT)
    assert (other.ack, other.error) == (False, ErrorCode.NOT_ASSIGNED)
    assert (unknown.ack, unknown.error) == (False, ErrorCode.NOT_FOUND)
    row = await task_row(sessionmaker, task["id"])
    assert row.result is None
    assert row.status == "queued"  # the recorder has not run; nothing else wrote


async def test_failure_retries_then_fails_with_the_agent_error(env: Env, sched, sched_service, sessionmaker) -> None:
    user = env.user()
    task = env.submit(user, {"type": "echo", "maxAttempts": 1})
    agent = await dispatch_to_new_agent(env, sched, sched_service, user.id)
    async with sessionmaker() as session:
        recorded = await TaskService(session, sched).record_failure(
            task["id"], 1, agent, error="ValueError", message="bad input", retryable=True, retry_delay_s=None
        )
    assert recorded.ack is True
    assert recorded.status == "failed"
    await Recorder(sched, sessionmaker, consumer="test-recorder").drain()
    row = await task_row(sessionmaker, task["id"])
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["error"] == "ValueError"
    body = env.client.get(f"/api/tasks/{task['id']}", headers=user.headers).json()
    assert body["error"] == {"error": "ValueError", "message": "bad input"}
    assert_cancel_conflict(env, user.headers, task["id"])


async def test_retryable_failure_keeps_task_active(env: Env, sched, sched_service, sessionmaker) -> None:
    user = env.user()
    task = env.submit(user, {"type": "echo", "maxAttempts": 3})
    agent = await dispatch_to_new_agent(env, sched, sched_service, user.id)
    async with sessionmaker() as session:
        recorded = await TaskService(session, sched).record_failure(
            task["id"], 1, agent, error="Timeout", message="upstream slow", retryable=True, retry_delay_s=30
        )
    assert (recorded.ack, recorded.status) == (True, "scheduled")
    await Recorder(sched, sessionmaker, consumer="test-recorder").drain()
    row = await task_row(sessionmaker, task["id"])
    assert row.status == "scheduled"
    assert row.error == {"error": "Timeout", "message": "upstream slow", "attempt": 1, "retryable": True}
    assert row.finished_at is None


def assert_cancel_conflict(env: Env, headers: dict[str, str], task_id: str) -> None:
    r = env.client.post(f"/api/tasks/{task_id}/cancel", headers=headers)
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "task_not_runnable"


async def test_events_left_by_a_crashed_recorder_are_taken_over(env: Env, sched, sessionmaker) -> None:
    user = env.user()
    task = env.submit(user)
    env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    # A replica reads the batch and dies before applying and acking it.
    crashed = await sched.read_events("crashed-replica", block_ms=0, count=1000)
    assert any(e.task_id == task["id"] for e in crashed)
    survivor = Recorder(sched, sessionmaker, consumer="survivor", claim_idle_ms=0)
    assert await survivor.drain() == 0  # nothing new: the entries sit in the dead consumer's pending list
    assert await survivor.claim_stale() >= len(crashed)
    assert await sched.claim_events_pending("anyone", min_idle_ms=0) == []
