"""Dead letters over REST: tasks failed through the real scheduler path, listed, retried, discarded, bulk-retried."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from api.tasks.service import TaskService
from scheduler.types import AgentSpec
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Caller,
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


async def fail_tasks(env: Env, user: Caller, task_type: str, n: int, sched, sched_service, sessionmaker) -> list[str]:
    """Submit `n` tasks, dispatch them to an agent, and have the agent fail each (not retryable)."""
    capability = "cap-" + uuid.uuid4().hex[:8]
    ids = [
        env.submit(user, {"type": task_type, "input": {"i": i}, "capabilities": [capability], "maxAttempts": 1})["id"]
        for i in range(n)
    ]
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (capability,), n), lease_s=30)
    await sched_service.run_until_idle()
    entries = await sched.read_inbox(agent, "test", block_ms=0, count=100)
    assert sorted(e.task_id for e in entries) == sorted(ids)
    await sched.ack_inbox(agent, [e.entry_id for e in entries])
    async with sessionmaker() as session:
        service = TaskService(session, sched)
        for task_id in ids:
            recorded = await service.record_failure(
                task_id, 1, agent, error="model_refused", message="boom", retryable=False, retry_delay_s=None
            )
            assert recorded.status == "failed"
    return ids


async def test_a_user_lists_retries_and_discards_dead_letters(env: Env, sched, sched_service, sessionmaker) -> None:
    user = env.user()
    task_type = "dl." + uuid.uuid4().hex[:6]
    first, second = await fail_tasks(env, user, task_type, 2, sched, sched_service, sessionmaker)

    r = env.client.get("/api/dead-letters", params={"type": task_type}, headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 2
    item = next(i for i in body["items"] if i["task"]["id"] == first)
    assert item["state"] == "open"
    assert item["task"]["status"] == "failed"
    assert item["task"]["error"]["error"] == "model_refused"
    assert item["task"]["error"]["message"] == "boom"

    # Retry: a new linked task, same request; the failed task is untouched.
    r = env.client.post(f"/api/dead-letters/{first}/retry", headers=user.headers)
    assert r.status_code == 201, r.text
    retried = r.json()
    new_id = retried["retryTaskId"]
    assert retried["state"] == "retried"
    assert new_id != first
    new_task = env.client.get(f"/api/tasks/{new_id}", headers=user.headers).json()
    assert new_task["type"] == task_type
    assert new_task["input"] == {"i": 0}
    assert new_task["status"] == "queued"
    assert new_task["attempt"] == 0
    assert new_task["idempotencyKey"] == f"retry:{first}"
    assert env.client.get(f"/api/tasks/{first}", headers=user.headers).json()["status"] == "failed"

    # Again: the same new task, 200.
    r = env.client.post(f"/api/dead-letters/{first}/retry", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["retryTaskId"] == new_id
    assert env.count_tasks(user.id) == 3

    # Discard the other; neither is open any more, each is under its state.
    r = env.client.post(f"/api/dead-letters/{second}/discard", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "discarded"
    open_now = env.client.get("/api/dead-letters", params={"type": task_type}, headers=user.headers).json()
    assert open_now["total"] == 0
    done = env.client.get("/api/dead-letters", params={"type": task_type, "state": "retried"}, headers=user.headers)
    assert [(i["task"]["id"], i["retryTaskId"]) for i in done.json()["items"]] == [(first, new_id)]
    params = {"type": task_type, "state": "discarded"}
    dropped = env.client.get("/api/dead-letters", params=params, headers=user.headers)
    assert [i["task"]["id"] for i in dropped.json()["items"]] == [second]

    # The two actions exclude each other.
    assert_error(env.client.post(f"/api/dead-letters/{first}/discard", headers=user.headers), 409, "conflict")
    assert_error(env.client.post(f"/api/dead-letters/{second}/retry", headers=user.headers), 409, "conflict")


async def test_dead_letters_are_owner_scoped_and_checked(env: Env, sched, sched_service, sessionmaker) -> None:
    owner = env.user()
    other = env.user()
    task_type = "dl." + uuid.uuid4().hex[:6]
    (failed,) = await fail_tasks(env, owner, task_type, 1, sched, sched_service, sessionmaker)

    listed = env.client.get("/api/dead-letters", params={"type": task_type}, headers=other.headers).json()
    assert listed["total"] == 0
    assert_error(env.client.get(f"/api/dead-letters/{failed}", headers=other.headers), 404, "not_found")
    assert_error(env.client.post(f"/api/dead-letters/{failed}/retry", headers=other.headers), 404, "not_found")
    assert_error(env.client.post(f"/api/dead-letters/{failed}/discard", headers=other.headers), 404, "not_found")

    live = env.submit(owner)
    assert_error(env.client.post(f"/api/dead-letters/{live['id']}/retry", headers=owner.headers), 409, "conflict")
    bad_state = env.client.get("/api/dead-letters", params={"state": "bogus"}, headers=owner.headers)
    assert_error(bad_state, 422, "validation_error")
    big_page = env.client.get("/api/dead-letters", params={"pageSize": 1000}, headers=owner.headers)
    assert_error(big_page, 422, "validation_error")
    assert env.client.get("/api/dead-letters").status_code == 401


async def test_an_admin_bulk_retries_by_type(env: Env, sched, sched_service, sessionmaker) -> None:
    owner = env.user()
    admin = env.user(admin=True)
    task_type = "dl." + uuid.uuid4().hex[:6]
    ids = await fail_tasks(env, owner, task_type, 3, sched, sched_service, sessionmaker)

    assert_error(
        env.client.post("/api/admin/dead-letters/retry", json={"type": task_type}, headers=owner.headers),
        403,
        "forbidden",
    )
    r = env.client.post("/api/admin/dead-letters/retry", json={"type": task_type, "limit": 2}, headers=admin.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["retried"] == 2
    assert {i["taskId"] for i in body["items"]} < set(ids)
    # The new tasks belong to the owner, not the admin.
    for item in body["items"]:
        new_task = env.client.get(f"/api/tasks/{item['retryTaskId']}", headers=owner.headers).json()
        assert new_task["ownerId"] == owner.id
    r = env.client.post("/api/admin/dead-letters/retry", json={"type": task_type}, headers=admin.headers)
    assert r.json()["retried"] == 1
    r = env.client.post("/api/admin/dead-letters/retry", json={"type": task_type}, headers=admin.headers)
    assert r.json()["retried"] == 0
    bad = env.client.post("/api/admin/dead-letters/retry", json={"type": task_type, "limit": 0}, headers=admin.headers)
    assert_error(bad, 422, "validation_error")
    assert env.client.get("/api/dead-letters", params={"type": task_type}, headers=admin.headers).json()["total"] == 0
