"""`/api/agents` through the real app: admin CRUD, visibility for users, the write-only token, audit."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from api.agents.service import AgentRecord, AgentService
from api.errors import UnauthorizedError
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
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

AGENT = {"name": "gpu-box", "type": "llm", "capabilities": ["gpu", "llm"], "concurrency": 4, "tags": ["eu"]}


def create_agent(env: Env, admin_headers: dict[str, str], **fields: object) -> dict:
    r = env.client.post("/api/agents", json={**AGENT, **fields}, headers=admin_headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_admin_creates_agent_and_token_is_shown_once(env: Env) -> None:
    admin = env.user(admin=True)
    created = create_agent(env, admin.headers, meta={"zone": "a"}, isPublic=True)
    token = created["token"]
    assert len(token) >= 43
    assert created["capabilities"] == ["gpu", "llm"]
    assert created["concurrency"] == 4
    assert created["online"] is False

    got = env.client.get(f"/api/agents/{created['id']}", headers=admin.headers)
    assert got.status_code == 200
    assert "token" not in got.json()
    assert "tokenHash" not in got.json()
    listed = env.client.get("/api/agents", headers=admin.headers).json()
    assert all("token" not in item for item in listed["items"])
    assert created["id"] in [item["id"] for item in listed["items"]]

    [(stored,)] = env.rows("SELECT token_hash FROM agents WHERE id = :i", i=created["id"])
    assert stored != token
    assert stored == hashlib.sha256(token.encode()).hexdigest()


def test_caller_chosen_token_must_be_long(env: Env) -> None:
    admin = env.user(admin=True)
    assert_error(
        env.client.post("/api/agents", json={**AGENT, "token": "short"}, headers=admin.headers), 422, "validation_error"
    )
    created = create_agent(env, admin.headers, token="t" * 40)
    assert created["token"] == "t" * 40


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "a", "concurrency": 0},
        {"name": "a", "capabilities": ["bad cap"]},
        {"name": "a", "capabilities": [f"c{i}" for i in range(33)]},
        {"name": "a", "tokenHash": "x"},
        {"name": "a", "ownerId": "x"},
        {"name": "a", "meta": {"blob": "x" * 20000}},
    ],
)
def test_bad_agent_bodies_are_refused_and_nothing_stored(env: Env, body: dict) -> None:
    admin = env.user(admin=True)
    r = env.client.post("/api/agents", json=body, headers=admin.headers)
    assert r.status_code in (413, 422), r.text
    assert r.json()["requestId"] == r.headers["x-request-id"]
    assert env.rows("SELECT count(*) FROM agents WHERE owner_id = :o", o=admin.id)[0][0] == 0


def test_users_see_public_agents_only_and_cannot_manage(env: Env) -> None:
    admin = env.user(admin=True)
    user = env.user()
    public = create_agent(env, admin.headers, isPublic=True)
    private = create_agent(env, admin.headers, isPublic=False)

    listed = env.client.get("/api/agents?pageSize=200", headers=user.headers).json()
    ids = [a["id"] for a in listed["items"]]
    assert public["id"] in ids
    assert private["id"] not in ids
    assert env.client.get(f"/api/agents/{public['id']}", headers=user.headers).status_code == 200
    foreign = env.client.get(f"/api/agents/{private['id']}", headers=user.headers)
    unknown = env.client.get("/api/agents/00000000-0000-0000-0000-000000000000", headers=user.headers)
    assert_error(foreign, 404, "not_found")
    assert_error(unknown, 404, "not_found")
    assert {k: v for k, v in foreign.json().items() if k != "requestId"} == {
        k: v for k, v in unknown.json().items() if k != "requestId"
    }

    assert_error(env.client.post("/api/agents", json=AGENT, headers=user.headers), 403, "forbidden")
    assert_error(
        env.client.put(f"/api/agents/{public['id']}", json={"name": "x"}, headers=user.headers), 403, "forbidden"
    )
    assert_error(env.client.delete(f"/api/agents/{public['id']}", headers=user.headers), 403, "forbidden")
    assert_error(env.client.post(f"/api/agents/{public['id']}/rotate-token", headers=user.headers), 403, "forbidden")
    assert_error(env.client.get("/api/agents"), 401, "unauthorized")


def test_update_is_partial_and_audited(env: Env) -> None:
    admin = env.user(admin=True)
    agent = create_agent(env, admin.headers)
    r = env.client.put(f"/api/agents/{agent['id']}", json={"concurrency": 8, "isPublic": True}, headers=admin.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["concurrency"] == 8
    assert body["isPublic"] is True
    assert body["name"] == AGENT["name"]
    assert "token" not in body
    assert_error(
        env.client.put(f"/api/agents/{agent['id']}", json={"token": "t" * 40}, headers=admin.headers),
        422,
        "validation_error",
    )
    actions = [r[0] for r in env.rows("SELECT action FROM audit_log WHERE target_id = :i ORDER BY id", i=agent["id"])]
    assert actions == ["agent.create", "agent.update"]


async def test_rotate_invalidates_old_token_and_delete_removes_agent(env: Env, sessionmaker) -> None:
    admin = env.user(admin=True)
    agent = create_agent(env, admin.headers)
    old = agent["token"]
    async with sessionmaker() as session:
        record = await AgentService(session, None).authenticate(agent["id"], old)  # type: ignore[arg-type]
        assert record.id == agent["id"]
        assert record.capabilities == ("gpu", "llm")
        assert AgentService.spec(record).concurrency == 4

    rotated = env.client.post(f"/api/agents/{agent['id']}/rotate-token", headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert new != old

    async with sessionmaker() as session:
        service = AgentService(session, None)  # type: ignore[arg-type]
        with pytest.raises(UnauthorizedError):
            await service.authenticate(agent["id"], old)
        assert (await service.authenticate(agent["id"], new)).id == agent["id"]
        with pytest.raises(UnauthorizedError):
            await service.authenticate("no-such-agent", new)

    assert env.client.delete(f"/api/agents/{agent['id']}", headers=admin.headers).status_code == 204
    assert_error(env.client.get(f"/api/agents/{agent['id']}", headers=admin.headers), 404, "not_found")
    async with sessionmaker() as session:
        with pytest.raises(UnauthorizedError):
            await AgentService(session, None).authenticate(agent["id"], new)  # type: ignore[arg-type]
    actions = [r[0] for r in env.rows("SELECT action FROM audit_log WHERE target_id = :i ORDER BY id", i=agent["id"])]
    assert actions == ["agent.create", "agent.rotate_token", "agent.delete"]
    details = str(env.rows("SELECT details FROM audit_log WHERE target_id = :i", i=agent["id"]))
    assert old not in details
    assert new not in details


async def test_online_state_and_load_come_from_presence(env: Env, sched) -> None:
    admin = env.user(admin=True)
    agent = create_agent(env, admin.headers, isPublic=True)
    offline = env.client.get(f"/api/agents/{agent['id']}", headers=admin.headers).json()
    assert offline["online"] is False
    assert "lastHeartbeatAt" not in offline
    lease_s = env.client.app.state.settings.ws.heartbeat_timeout_s
    before = dt.datetime.now(dt.UTC)
    await sched.agent_online(AgentService.spec(_record(agent, admin.id)), lease_s=lease_s)
    body = env.client.get(f"/api/agents/{agent['id']}", headers=admin.headers).json()
    assert body["online"] is True
    assert body["running"] == 0
    # The presence lease's end minus its length: the moment of the renewal.
    seen = dt.datetime.fromisoformat(body["lastHeartbeatAt"])
    assert before - dt.timedelta(seconds=2) <= seen <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    listed = env.client.get("/api/agents", headers=admin.headers).json()["items"]
    assert [a["lastHeartbeatAt"] for a in listed if a["id"] == agent["id"]] == [body["lastHeartbeatAt"]]


async def test_delete_requeues_running_tasks_and_announces_revocation(
    env: Env, sched, sched_service, redis_client
) -> None:
    admin = env.user(admin=True)
    agent = create_agent(env, admin.headers, capabilities=[])
    await sched.agent_online(AgentService.spec(_record(agent, admin.id)), lease_s=30)
    task = env.client.post("/api/tasks", json={"type": "echo", "agentId": agent["id"]}, headers=admin.headers).json()
    await sched_service.run_until_idle()
    assert (await sched.accept(task["id"], 1, agent["id"])).outcome == "ok"

    pubsub = redis_client.pubsub()
    await pubsub.subscribe(sched.keys.control_channel())
    try:
        assert env.client.delete(f"/api/agents/{agent['id']}", headers=admin.headers).status_code == 204
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                break
        assert message is not None
        assert json.loads(message["data"]) == {"kind": "agent_revoked", "id": agent["id"]}
    finally:
        await pubsub.aclose()
    assert not await sched.is_online(agent["id"])
    # Back in the queue at once, not after the heartbeat timeout; its old attempt is now stale.
    # And since it was pinned to the deleted agent, nobody may run it: it is canceled, not left queued.
    history = await sched.history(task["id"])
    assert [e.status for e in history[-2:]] == ["queued", "canceled"]
    got = env.client.get(f"/api/tasks/{task['id']}", headers=admin.headers).json()
    assert got["status"] == "canceled"
    assert got["events"][-1]["data"] == {"reason": "agent_deleted"}


async def test_delete_cancels_queued_tasks_pinned_to_the_agent_and_leaves_others(env: Env, sched_service) -> None:
    admin = env.user(admin=True)
    doomed = create_agent(env, admin.headers, capabilities=["x"])
    other = create_agent(env, admin.headers, capabilities=["x"])
    pinned = env.client.post("/api/tasks", json={"type": "echo", "agentId": doomed["id"]}, headers=admin.headers)
    elsewhere = env.client.post("/api/tasks", json={"type": "echo", "agentId": other["id"]}, headers=admin.headers)
    by_caps = env.client.post("/api/tasks", json={"type": "echo", "capabilities": ["x"]}, headers=admin.headers)
    assert env.client.delete(f"/api/agents/{doomed['id']}", headers=admin.headers).status_code == 204

    def status(created: object) -> str:
        return env.client.get(f"/api/tasks/{created.json()['id']}", headers=admin.headers).json()["status"]

    assert status(pinned) == "canceled"
    assert status(elsewhere) == "queued"
    assert status(by_caps) == "queued"


def _record(agent: dict, owner_id: str) -> AgentRecord:
    return AgentRecord(
        id=agent["id"],
        owner_id=owner_id,
        name=agent["name"],
        type=agent["type"],
        capabilities=tuple(agent["capabilities"]),
        concurrency=agent["concurrency"],
        is_public=agent["isPublic"],
    )
