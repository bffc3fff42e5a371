"""Submission under faults and limits, cancel of a running task, and the app's own background recorder."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import redis.exceptions

from api.tasks.reconciler import Reconciler
from api.tasks.service import TaskService
from scheduler.types import AgentSpec, Outcome
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    PASSWORD,
    Env,
    assert_error,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_service_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis


class EnqueueFails:
    """The scheduler client with Redis failing on enqueue only (the crash window after the commit)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def enqueue(self, spec: Any) -> bool:
        raise redis.exceptions.ConnectionError("redis went away")

    async def enqueue_many(self, specs: Any) -> int:
        raise redis.exceptions.ConnectionError("redis went away")


async def wait_until(predicate: Any, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_enqueue_failure_after_commit_still_answers_201_and_reconciler_recovers(
    env: Env, sched, sessionmaker
) -> None:
    user = env.user()
    state = env.client.app.state
    real = state.scheduler
    state.scheduler = EnqueueFails(real)
    try:
        task = env.submit(user)
        batch = env.client.post(
            "/api/tasks/batch", json={"tasks": [{"type": "t"}, {"type": "t"}]}, headers=user.headers
        )
        assert batch.status_code == 201
    finally:
        state.scheduler = real
    ids = [task["id"], *(t["id"] for t in batch.json()["items"])]
    assert env.rows("SELECT count(*) FROM tasks WHERE id IN (:a, :b, :c)", a=ids[0], b=ids[1], c=ids[2])[0][0] == 3
    assert await sched.known_task_ids(ids) == set()

    await Reconciler(sched, sessionmaker, grace_s=0).reenqueue_recent()
    assert await sched.known_task_ids(ids) == set(ids)


def test_redis_down_before_commit_is_503_and_nothing_stored(make_env: Any) -> None:
    healthy = make_env()
    user = healthy.user()
    broken = make_env(REDIS_URL="redis://127.0.0.1:1/0")
    r = broken.client.post("/api/tasks", json={"type": "echo"}, headers=user.headers)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "service_unavailable"
    assert healthy.count_tasks(user.id) == 0


def test_a_revoked_token_cannot_submit_and_is_not_counted(make_env: Any) -> None:
    env = make_env(TASKYARD_API_TASK_SUBMIT_PER_USER=2)
    user = env.user()
    assert env.client.post("/api/auth/logout", headers=user.headers).status_code == 200
    for _ in range(3):
        assert_error(env.client.post("/api/tasks", json={"type": "echo"}, headers=user.headers), 401, "unauthorized")
    assert env.count_tasks(user.id) == 0
    # The refusals counted nothing: a new session still has the whole limit.
    login = env.client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    fresh = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    for _ in range(2):
        assert env.client.post("/api/tasks", json={"type": "echo"}, headers=fresh).status_code == 201
    assert_error(env.client.post("/api/tasks", json={"type": "echo"}, headers=fresh), 429, "rate_limited")


def test_a_revoked_token_is_refused_while_redis_is_down(make_env: Any) -> None:
    healthy = make_env()
    user = healthy.user()
    assert healthy.client.post("/api/auth/logout", headers=user.headers).status_code == 200
    broken = make_env(REDIS_URL="redis://127.0.0.1:1/0")
    # The database decides the token before the rate limit fails closed: a 401, not a 503.
    assert_error(broken.client.post("/api/tasks", json={"type": "echo"}, headers=user.headers), 401, "unauthorized")
    assert healthy.count_tasks(user.id) == 0


def test_submission_rate_limit_is_per_user(make_env: Any) -> None:
    env = make_env(TASKYARD_API_TASK_SUBMIT_PER_USER=2)
    user = env.user()
    env.submit(user)
    env.submit(user)
    limited = env.client.post("/api/tasks", json={"type": "echo"}, headers=user.headers)
    body = assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert body["code"] == 1029
    assert env.count_tasks(user.id) == 2
    other = env.user()
    env.submit(other)
    # An idempotent replay is answered from the database, not counted.
    key = {"Idempotency-Key": "replay-" + uuid.uuid4().hex}
    first = env.client.post("/api/tasks", json={"type": "echo"}, headers={**other.headers, **key})
    assert first.status_code == 201
    again = env.client.post("/api/tasks", json={"type": "echo"}, headers={**other.headers, **key})
    assert again.status_code == 200


async def test_cancel_running_task_tells_the_agent_and_refuses_its_late_result(
    env: Env, sched, sched_service, sessionmaker
) -> None:
    user = env.user()
    task = env.submit(user)
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (), 1), lease_s=30)
    await sched_service.run_until_idle()
    submitted = await sched.read_inbox(agent, "test", block_ms=0, count=10)
    assert [e.kind for e in submitted] == ["submit"]
    await sched.ack_inbox(agent, [e.entry_id for e in submitted])
    assert (await sched.accept(task["id"], 1, agent)).outcome == Outcome.OK

    r = env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    inbox = await sched.read_inbox(agent, "test", block_ms=0, count=10)
    assert [(e.kind, e.task_id, e.attempt) for e in inbox] == [("cancel", task["id"], 1)]

    async with sessionmaker() as session:
        late = await TaskService(session, sched).record_result(task["id"], 1, agent, {"partial": "text"})
    # The canceled attempt's output is kept as partial output (so an LLM stream cut by a cancel keeps
    # what was written) and acked, so the agent stops resending; the status stays canceled.
    assert (late.ack, late.status) == (True, "canceled")
    [(status, result)] = env.rows("SELECT status, result FROM tasks WHERE id = :i", i=task["id"])
    assert status == "canceled"
    assert (json.loads(result) if isinstance(result, str) else result) == {"partial": "text"}
    async with sessionmaker() as session:
        other = await TaskService(session, sched).record_result(task["id"], 1, "agent-someone-else", {"x": 1})
    assert other.ack is False  # only the attempt's own agent is heard


async def test_app_recorder_follows_the_task(make_env: Any, sched, sched_service) -> None:
    env = make_env(TASKYARD_API_RECORDER_ENABLED=1)
    user = env.user()
    task = env.submit(user)
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (), 1), lease_s=30)
    await sched_service.run_until_idle()
    await sched.accept(task["id"], 1, agent)

    async def running() -> bool:
        body = env.client.get(f"/api/tasks/{task['id']}", headers=user.headers).json()
        return body["status"] == "running" and body["agentId"] == agent and body["startedAt"] is not None

    await wait_until(running)


def test_database_down_is_503_not_500(make_env: Any) -> None:
    healthy = make_env()
    user = healthy.user()
    broken = make_env(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    for method, path, body in (
        ("POST", "/api/tasks", {"type": "echo"}),
        ("GET", "/api/tasks", None),
        ("GET", "/api/agents", None),
    ):
        r = broken.client.request(method, path, json=body, headers=user.headers)
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert r.json()["error"] == "service_unavailable"
        assert r.json()["requestId"] == r.headers["x-request-id"]
