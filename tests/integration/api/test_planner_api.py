"""`/api/planner` through the real app: bad input (400/404/422), reads, pagination, sessions, the rate limit and
the wait bound (no agent here: every LLM-backed request ends in 504), and the agents' `trusted` flag."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from api.db.base import utcnow
from tests.integration.api import planner_factories as make
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Caller,
    Env,
    assert_error,
    env_fixture,
    make_env_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis

FAST = {"TASKYARD_API_PLANNER_WAIT_S": 0.3, "TASKYARD_API_PLANNER_RECHECK_INTERVAL_S": 0.1}


def _tasks(env: Env, caller: Caller, count: int, **values: Any) -> list[int]:
    """Planner tasks of `caller`, oldest first, written straight to the database."""

    async def write() -> list[int]:
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

        engine = create_async_engine(env.database_url)
        try:
            db = async_sessionmaker(engine, expire_on_commit=False)
            ids = [(await make.planner_task(db, caller.id, steps=2))[0] for _ in range(count)]
            if values:
                from sqlalchemy import update

                from api.db.models.planner import PlannerTask

                async with db() as session:
                    await session.execute(update(PlannerTask).where(PlannerTask.id.in_(ids)).values(**values))
                    await session.commit()
            return ids
        finally:
            await engine.dispose()

    return asyncio.run(write())


def _from_text(env: Env, user: Caller, body: dict[str, Any] | None = None) -> Any:
    return env.client.post(
        "/api/planner/tasks/from-text", json={"rawText": "plan my week"} if body is None else body, headers=user.headers
    )


def test_from_text_needs_text(make_env: Callable[..., Env]) -> None:
    env = make_env(**FAST)
    user = env.user()
    for body in ({}, {"rawText": ""}, {"rawText": "   \n "}, {"rawText": "abc"}):
        error = assert_error(_from_text(env, user, body), 400, "bad_request")
        assert error["details"] == {"field": "rawText"}
    for body, field in (({"rawText": "x" * 20_001}, "rawText"), ({"rawText": "plan it", "raw_text": "x"}, "raw_text")):
        error = assert_error(_from_text(env, user, body), 422, "validation_error")
        assert field in str(error["details"])
    assert env.rows("SELECT count(*) FROM planner_jobs WHERE user_id = :u", u=user.id)[0][0] == 0
    assert_error(env.client.post("/api/planner/tasks/from-text", json={"rawText": "plan my week"}), 401, "unauthorized")


def test_without_an_agent_the_request_answers_504_and_names_its_job(make_env: Callable[..., Env]) -> None:
    env = make_env(**FAST)
    user = env.user()

    error = assert_error(_from_text(env, user), 504, "gateway_timeout")
    job_id = error["details"]["jobId"]
    assert error["details"]["location"] == f"/api/planner/jobs/{job_id}"
    job = env.client.get(f"/api/planner/jobs/{job_id}", headers=user.headers).json()
    assert job["job"]["status"] == "pending"
    assert job["job"]["kind"] == "from_text"
    assert job["job"]["taskId"] == error["details"]["taskId"]
    assert (job["fromText"], job["reply"]) == (None, None)
    # The work is an ordinary task of the user's, queued for an agent with the llm capability.
    task = env.client.get(f"/api/tasks/{job['job']['taskId']}", headers=user.headers).json()
    assert (task["type"], task["status"], task["capabilities"]) == ("planner.from_text", "queued", ["llm"])
    assert task["input"]["rawText"] == "plan my week"


def test_llm_requests_are_rate_limited_per_user(make_env: Callable[..., Env]) -> None:
    env = make_env(**FAST, TASKYARD_API_PLANNER_LLM_PER_USER=2)
    user, other = env.user(), env.user()
    session = env.client.get("/api/planner/sessions/global", headers=user.headers).json()["session"]["id"]
    url = f"/api/planner/sessions/{session}/messages"
    statuses = [
        _from_text(env, user).status_code,
        env.client.post(url, json={"content": "hi"}, headers=user.headers).status_code,
    ]
    limited = _from_text(env, user)

    assert statuses == [504, 504]
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert _from_text(env, other).status_code == 504


def test_list_filters_pages_and_shows_only_your_tasks(env: Env) -> None:
    user, other = env.user(), env.user()
    ids = _tasks(env, user, 5)
    _tasks(env, user, 2, status="done")
    _tasks(env, other, 3)

    page = env.client.get("/api/planner/tasks?limit=2&offset=1&status=todo", headers=user.headers).json()
    everything = env.client.get("/api/planner/tasks?limit=200", headers=user.headers).json()

    assert page["total"] == 5
    assert [t["id"] for t in page["tasks"]] == [ids[3], ids[2]]  # newest first
    assert everything["total"] == 7
    assert all(t["userId"] == user.id for t in everything["tasks"])
    assert all("steps" not in t for t in everything["tasks"])
    for query in ("status=nope", "status=" + "x" * 17, "limit=0", "limit=201", "offset=-1", "limit=x"):
        assert_error(env.client.get(f"/api/planner/tasks?{query}", headers=user.headers), 422, "validation_error")


def test_task_detail_creates_its_session_once(env: Env) -> None:
    user = env.user()
    (task_id,) = _tasks(env, user, 1)

    first = env.client.get(f"/api/planner/tasks/{task_id}", headers=user.headers).json()
    second = env.client.get(f"/api/planner/tasks/{task_id}", headers=user.headers).json()

    assert first == second
    assert [s["orderIndex"] for s in first["task"]["steps"]] == [1, 2]
    assert (first["session"]["taskId"], first["session"]["type"]) == (task_id, "task")
    for bad in ("abc", "0", "-1", "1.5", "9" * 17, "99999999999999999999", str(task_id + 10_000)):
        assert_error(env.client.get(f"/api/planner/tasks/{bad}", headers=user.headers), 404, "not_found")


def test_messages_page_backwards_by_time(env: Env) -> None:
    user = env.user()
    session = env.client.get("/api/planner/sessions/global", headers=user.headers).json()["session"]["id"]

    async def write() -> None:
        import datetime as dt

        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

        from api.db.models.planner import PlannerMessage

        engine = create_async_engine(env.database_url)
        try:
            async with async_sessionmaker(engine)() as db:
                start = utcnow() - dt.timedelta(hours=1)
                db.add_all(
                    PlannerMessage(
                        session_id=session, role="user", content=f"m{i}", created_at=start + dt.timedelta(minutes=i)
                    )
                    for i in range(5)
                )
                await db.commit()
        finally:
            await engine.dispose()

    asyncio.run(write())
    url = f"/api/planner/sessions/{session}/messages"
    newest = env.client.get(f"{url}?limit=2", headers=user.headers).json()
    older = env.client.get(url, params={"limit": 2, "before": newest["messages"][0]["createdAt"]}, headers=user.headers)

    assert [m["content"] for m in newest["messages"]] == ["m3", "m4"]
    assert [m["content"] for m in older.json()["messages"]] == ["m1", "m2"]
    assert_error(env.client.get(f"{url}?before=yesterday", headers=user.headers), 422, "validation_error")


def test_posting_to_a_session_needs_content_and_your_session(make_env: Callable[..., Env]) -> None:
    env = make_env(**FAST)
    user, other = env.user(), env.user()
    session = env.client.get("/api/planner/sessions/global", headers=user.headers).json()["session"]["id"]
    url = f"/api/planner/sessions/{session}/messages"

    assert_error(env.client.post(url, json={"content": "  "}, headers=user.headers), 400, "bad_request")
    assert_error(env.client.post(url, json={"content": "x" * 8001}, headers=user.headers), 422, "validation_error")
    assert_error(env.client.post(url, json={"content": "hi"}, headers=other.headers), 404, "not_found")
    assert_error(env.client.post(url, json={"content": "  "}, headers=other.headers), 404, "not_found")
    assert env.client.get(url, headers=user.headers).json()["messages"] == []
    assert env.client.get("/api/planner/sessions/global", headers=other.headers).json()["session"]["id"] != session


def test_only_admins_mark_agents_trusted(env: Env) -> None:
    admin, user = env.user(admin=True), env.user()
    created = env.client.post(
        "/api/agents", json={"name": "llm-worker", "capabilities": ["llm"], "trusted": True}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["trusted"] is True

    assert_error(
        env.client.put(f"/api/agents/{agent['id']}", json={"trusted": False}, headers=user.headers), 403, "forbidden"
    )
    updated = env.client.put(f"/api/agents/{agent['id']}", json={"trusted": False}, headers=admin.headers).json()
    assert updated["trusted"] is False
    assert env.rows("SELECT trusted FROM agents WHERE id = :i", i=agent["id"])[0][0] in (False, 0)
