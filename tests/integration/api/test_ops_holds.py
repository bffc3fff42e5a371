"""Pause/resume, drain/undrain and disable observed through REST, with the real scheduler scripts and recorder."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from scheduler.keys import route_id
from scheduler.types import AgentSpec
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    PASSWORD,
    Caller,
    Env,
    assert_error,
    make_env_fixture,
    sched_fixture,
    sched_service_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis


async def wait_until(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def status_of(env: Env, user: Caller, task_id: str) -> str:
    body: dict[str, Any] = env.client.get(f"/api/tasks/{task_id}", headers=user.headers).json()
    return str(body["status"])


def create_agent(env: Env, admin: Caller, capability: str, concurrency: int = 4) -> str:
    r = env.client.post(
        "/api/agents",
        json={
            "name": "a",
            "type": "worker",
            "capabilities": [capability],
            "concurrency": concurrency,
            "isPublic": True,
        },
        headers=admin.headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(name="renv")
def renv_fixture(make_env: Any) -> Env:
    """An app with its recorder on, so REST shows what the scheduler did."""
    env: Env = make_env(TASKYARD_API_RECORDER_ENABLED=1)
    return env


async def test_pausing_a_type_keeps_its_tasks_queued_and_lets_others_pass(renv: Env, sched, sched_service) -> None:
    env = renv
    admin = env.user(admin=True)
    user = env.user()
    cap = "cap-" + uuid.uuid4().hex[:8]
    held_type = "held." + uuid.uuid4().hex[:6]
    r = env.client.post("/api/admin/pauses", json={"type": held_type}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert held_type in r.json()["pausedTypes"]

    # Same route (capability set), the held tasks first in line.
    held = [env.submit(user, {"type": held_type, "capabilities": [cap]})["id"] for _ in range(3)]
    other = env.submit(user, {"type": "echo", "capabilities": [cap]})["id"]
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (cap,), 10), lease_s=30)
    await sched_service.run_until_idle()

    await wait_until(lambda: status_of(env, user, other) == "assigned")
    assert [status_of(env, user, t) for t in held] == ["queued"] * 3

    r = env.client.post("/api/admin/pauses/resume", json={"type": held_type}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert held_type not in r.json()["pausedTypes"]
    await sched_service.run_until_idle()
    await wait_until(lambda: all(status_of(env, user, t) == "assigned" for t in held))


async def test_pausing_a_route_by_capabilities(renv: Env, sched, sched_service) -> None:
    env = renv
    admin = env.user(admin=True)
    user = env.user()
    cap = "cap-" + uuid.uuid4().hex[:8]
    r = env.client.post("/api/admin/pauses", json={"capabilities": [cap]}, headers=admin.headers)
    assert r.status_code == 200, r.text
    [route] = r.json()["pausedRoutes"]
    assert route == route_id(None, (cap,))
    task = env.submit(user, {"type": "echo", "capabilities": [cap]})["id"]
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (cap,), 2), lease_s=30)
    await sched_service.run_until_idle()
    await asyncio.sleep(0.5)  # give the recorder the chance to show a (wrong) dispatch
    assert status_of(env, user, task) == "queued"

    r = env.client.post("/api/admin/pauses/resume", json={"capabilities": [cap]}, headers=admin.headers)
    assert route not in r.json()["pausedRoutes"]
    await sched_service.run_until_idle()
    await wait_until(lambda: status_of(env, user, task) == "assigned")


async def test_pause_requests_are_validated_and_admin_only(renv: Env) -> None:
    env = renv
    admin = env.user(admin=True)
    user = env.user()
    assert_error(env.client.post("/api/admin/pauses", json={"type": "x"}, headers=user.headers), 403, "forbidden")
    assert_error(env.client.get("/api/admin/pauses", headers=user.headers), 403, "forbidden")
    assert_error(env.client.post("/api/admin/pauses", json={}, headers=admin.headers), 422, "validation_error")
    both = {"type": "x", "capabilities": ["y"]}
    assert_error(env.client.post("/api/admin/pauses", json=both, headers=admin.headers), 422, "validation_error")
    long_type = {"type": "x" * 500}
    assert_error(env.client.post("/api/admin/pauses", json=long_type, headers=admin.headers), 422, "validation_error")
    bad_route = {"route": "zzz"}
    assert_error(env.client.post("/api/admin/pauses", json=bad_route, headers=admin.headers), 422, "validation_error")
    assert_error(env.client.get("/api/admin/agents/nope/drain", headers=admin.headers), 404, "not_found")


async def test_draining_an_agent_finishes_its_work_then_shows_drained(renv: Env, sched, sched_service) -> None:
    env = renv
    admin = env.user(admin=True)
    cap = "cap-" + uuid.uuid4().hex[:8]
    agent = create_agent(env, admin, cap, concurrency=4)
    first = env.submit(admin, {"type": "echo", "capabilities": [cap]})["id"]
    await sched.agent_online(AgentSpec(agent, admin.id, (cap,), 4), lease_s=30)
    await sched_service.run_until_idle()
    assert (await sched.accept(first, 1, agent)).outcome.value == "ok"

    r = env.client.post(f"/api/admin/agents/{agent}/drain", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"agentId": agent, "draining": True, "online": True, "running": 1, "drained": False}
    second = env.submit(admin, {"type": "echo", "capabilities": [cap]})["id"]
    await sched_service.run_until_idle()
    await wait_until(lambda: status_of(env, admin, first) == "running")
    assert status_of(env, admin, second) == "queued"

    # The running task finishes; then the agent shows drained.
    assert (await sched.complete(first, 1, agent)).outcome.value == "ok"
    state = env.client.get(f"/api/admin/agents/{agent}/drain", headers=admin.headers).json()
    assert state["drained"] is True
    assert state["running"] == 0
    await sched_service.run_until_idle()
    assert status_of(env, admin, second) == "queued"

    r = env.client.post(f"/api/admin/agents/{agent}/undrain", headers=admin.headers)
    assert r.json()["draining"] is False
    await sched_service.run_until_idle()
    await wait_until(lambda: status_of(env, admin, second) == "assigned")


async def test_disabling_a_user_ends_their_tokens_and_closes_their_sockets(renv: Env, redis_client: Any) -> None:
    env = renv
    admin = env.user(admin=True)
    user = env.user()
    login = env.client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD}).json()
    assert env.client.get("/api/tasks", headers=user.headers).status_code == 200

    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"{env.prefix}:control")
    try:
        r = env.client.post(f"/api/admin/users/{user.id}/disable", headers=admin.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"userId": user.id, "active": False}
        message = None
        deadline = time.monotonic() + 10
        while message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        assert message is not None
        assert json.loads(message["data"]) == {"kind": "user_disabled", "id": user.id}
    finally:
        await pubsub.aclose()

    assert_error(env.client.get("/api/tasks", headers=user.headers), 401, "unauthorized")
    refresh = env.client.post("/api/auth/refresh", json={"refreshToken": login["refreshToken"]})
    assert refresh.status_code == 401
    relogin = env.client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert relogin.status_code == 401

    assert_error(env.client.post(f"/api/admin/users/{admin.id}/disable", headers=admin.headers), 409, "conflict")
    assert_error(env.client.post(f"/api/admin/users/{user.id}/enable", headers=user.headers), 401, "unauthorized")
    r = env.client.post(f"/api/admin/users/{user.id}/enable", headers=admin.headers)
    assert r.json() == {"userId": user.id, "active": True}
    assert env.client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD}).status_code == 200


async def test_a_disabled_users_agents_cannot_authenticate(renv: Env, sched, sessionmaker) -> None:
    from api.agents.service import AgentService
    from api.errors import UnauthorizedError

    env = renv
    admin = env.user(admin=True)
    owner = env.user(admin=True)  # only admins create public agents here; the owner is who matters
    r = env.client.post(
        "/api/agents",
        json={"name": "mine", "type": "worker", "capabilities": [], "concurrency": 1},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    agent_id, token = r.json()["id"], r.json()["token"]
    async with sessionmaker() as session:
        assert (await AgentService(session, sched).authenticate(agent_id, token)).id == agent_id

    assert env.client.post(f"/api/admin/users/{owner.id}/disable", headers=admin.headers).status_code == 200
    async with sessionmaker() as session:
        with pytest.raises(UnauthorizedError):
            await AgentService(session, sched).authenticate(agent_id, token)
    assert env.client.post(f"/api/admin/users/{owner.id}/enable", headers=admin.headers).status_code == 200
    async with sessionmaker() as session:
        assert (await AgentService(session, sched).authenticate(agent_id, token)).id == agent_id


async def test_holds_outlive_a_redis_that_lost_them(renv: Env, sched, sched_service, redis_client) -> None:
    """Redis comes back empty: the app's reconciler puts pauses and drains back before it requeues anything."""
    from tests.integration.api.test_reconciler import wipe_prefix

    env = renv
    admin = env.user(admin=True)
    user = env.user()
    cap = "cap-" + uuid.uuid4().hex[:8]
    held_type = "held." + uuid.uuid4().hex[:6]
    drained = create_agent(env, admin, cap)
    assert env.client.post("/api/admin/pauses", json={"type": held_type}, headers=admin.headers).status_code == 200
    assert env.client.post(f"/api/admin/agents/{drained}/drain", headers=admin.headers).status_code == 200
    held = env.submit(user, {"type": held_type, "capabilities": [cap]})["id"]
    rows = env.rows("SELECT kind, name, actor_id FROM operator_holds ORDER BY kind")
    assert rows == [("agent", drained, admin.id), ("type", held_type, admin.id)]

    await wipe_prefix(redis_client, env.prefix)
    assert env.client.get("/api/admin/pauses", headers=admin.headers).json()["pausedTypes"] == []
    # The app's own reconciler (its wiring included), on the app's event loop.
    reconciler = env.client.app.state.reconciler
    rebuilt = env.client.blocking_portal.call(reconciler.rebuild_if_needed)
    assert rebuilt is not None
    assert rebuilt >= 1
    holds = env.client.get("/api/admin/pauses", headers=admin.headers).json()
    assert holds["pausedTypes"] == [held_type]
    assert holds["drainedAgents"] == [drained]

    # The requeued task stays queued for a free agent; the drained agent gets nothing either.
    other = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(other, user.id, (cap,), 4), lease_s=30)
    await sched.agent_online(AgentSpec(drained, admin.id, (cap,), 4), lease_s=30)
    await sched_service.run_until_idle()
    await asyncio.sleep(0.3)
    assert status_of(env, user, held) == "queued"

    # Resuming forgets the row too: a second loss brings back only the drain.
    env.client.post("/api/admin/pauses/resume", json={"type": held_type}, headers=admin.headers)
    assert env.rows("SELECT kind FROM operator_holds") == [("agent",)]
