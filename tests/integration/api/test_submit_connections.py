"""The single-submit path without a ping per request: dead pooled connections, and concurrent submits.

Real PostgreSQL (the backends are killed with `pg_terminate_backend`) and real Redis; counts and
outcomes only, never timings.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

import api.db.session
from scheduler.client import SchedulerClient
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    assert_error,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_settings_fixture,
)

pytestmark = pytest.mark.redis


def _kill_app_connections(env: Env) -> int:
    """Terminate every other backend of this database: the app's pooled connections are then dead."""
    if not env.database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (backends to terminate)")
    with env.db.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return int(killed)


async def test_a_submit_on_a_dead_connection_is_retried_and_committed_once(env: Env, sched: SchedulerClient) -> None:
    user = env.user()
    env.submit(user)  # the pool now holds a connection used a moment ago: it is not pinged again
    assert _kill_app_connections(env) >= 1

    task = env.submit(user, {"type": "echo", "input": {"after": "restart"}})

    assert env.rows("SELECT count(*) FROM tasks WHERE id = :i", i=task["id"]) == [(1,)]
    assert env.count_tasks(user.id) == 2
    assert await sched.known_task_ids([task["id"]]) == {task["id"]}


async def test_a_retried_submit_with_a_key_is_still_one_task(env: Env, sched: SchedulerClient) -> None:
    user = env.user()
    env.submit(user)
    assert _kill_app_connections(env) >= 1
    headers = {**user.headers, "Idempotency-Key": "after-restart"}

    first = env.client.post("/api/tasks", json={"type": "echo"}, headers=headers)
    again = env.client.post("/api/tasks", json={"type": "echo"}, headers=headers)

    assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)
    assert first.json()["id"] == again.json()["id"]
    assert env.count_tasks(user.id) == 2
    assert await sched.known_task_ids([first.json()["id"]]) == {first.json()["id"]}


def test_an_idle_connection_is_pinged_and_replaced_before_use(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    user = env.user()
    env.submit(user)
    monkeypatch.setattr(api.db.session, "IDLE_PING_S", 0.0)  # every pooled connection counts as idle
    assert _kill_app_connections(env) >= 1

    listed = env.client.get("/api/tasks", headers=user.headers)

    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 1


def test_a_read_on_a_dead_connection_is_a_503_and_the_next_one_works(env: Env) -> None:
    user = env.user()
    env.submit(user)
    assert _kill_app_connections(env) >= 1

    failed = env.client.get("/api/tasks", headers=user.headers)
    body = assert_error(failed, 503, "service_unavailable")
    assert failed.headers["retry-after"] == "2"
    assert body["code"] == 5003

    listed = env.client.get("/api/tasks", headers=user.headers)
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 1


async def test_concurrent_submits_are_each_committed_and_enqueued(env: Env, sched: SchedulerClient) -> None:
    user = env.user()

    def post(n: int) -> tuple[int, str]:
        r = env.client.post("/api/tasks", json={"type": "echo", "input": {"n": n}}, headers=user.headers)
        return r.status_code, r.json().get("id", r.text)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(post, range(64)))

    assert {code for code, _ in answers} == {201}, answers
    ids = {task_id for _, task_id in answers}
    assert len(ids) == 64
    stored = env.rows("SELECT id, input FROM tasks WHERE owner_id = :o", o=user.id)
    assert {row[0] for row in stored} == ids
    inputs = [json.loads(row[1]) if isinstance(row[1], str) else row[1] for row in stored]  # SQLite: JSON text
    assert sorted(i["n"] for i in inputs) == list(range(64))
    assert await sched.known_task_ids(ids) == ids
