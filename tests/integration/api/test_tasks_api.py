"""`/api/tasks` through the real app: submit, read, list, idempotency, batch, access, bad input, cancel."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from protocol.limits import MAX_BATCH_SIZE, MAX_TASK_INPUT_BYTES
from scheduler.client import SchedulerClient
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


def test_submit_then_get_shows_task_and_first_event(env: Env) -> None:
    user = env.user()
    task = env.submit(user, {"type": "llm.chat", "input": {"prompt": "hi"}, "priority": 7, "capabilities": ["llm"]})
    assert task["status"] == "queued"
    assert task["priority"] == 7
    assert task["ownerId"] == user.id
    assert task["attempt"] == 0
    assert task["capabilities"] == ["llm"]
    assert task["maxAttempts"] == 3
    got = env.client.get(f"/api/tasks/{task['id']}", headers=user.headers)
    assert got.status_code == 200
    body = got.json()
    assert body["input"] == {"prompt": "hi"}
    assert [(e["seq"], e["status"]) for e in body["events"]] == [(1, "queued")]


async def test_submitted_task_is_in_redis(env: Env, sched: SchedulerClient) -> None:
    user = env.user()
    task = env.submit(user)
    assert await sched.known_task_ids([task["id"]]) == {task["id"]}
    assert sum((await sched.queue_depths()).values()) == 1


def test_future_run_at_is_scheduled(env: Env) -> None:
    user = env.user()
    run_at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    task = env.submit(user, {"type": "echo", "runAt": run_at})
    assert task["status"] == "scheduled"
    assert task["runAt"] is not None


def test_list_filters_and_pages(env: Env) -> None:
    user = env.user()
    other = env.user()
    for i in range(5):
        env.submit(user, {"type": "a" if i % 2 == 0 else "b"})
    env.submit(other, {"type": "a"})

    page = env.client.get("/api/tasks?pageSize=2&page=1", headers=user.headers).json()
    assert page["total"] == 5
    assert page["page"] == 1
    assert page["pageSize"] == 2
    assert len(page["items"]) == 2
    last = env.client.get("/api/tasks?pageSize=2&page=3", headers=user.headers).json()
    assert len(last["items"]) == 1
    assert last["total"] == 5
    past = env.client.get("/api/tasks?pageSize=2&page=4", headers=user.headers).json()
    assert past["items"] == []
    assert past["total"] == 5  # a page past the end still tells the total
    ids = {
        t["id"]
        for p in (1, 2, 3)
        for t in env.client.get(f"/api/tasks?pageSize=2&page={p}", headers=user.headers).json()["items"]
    }
    assert len(ids) == 5

    only_a = env.client.get("/api/tasks?type=a", headers=user.headers).json()
    assert only_a["total"] == 3
    assert {t["type"] for t in only_a["items"]} == {"a"}
    assert env.client.get("/api/tasks?status=queued", headers=user.headers).json()["total"] == 5
    assert env.client.get("/api/tasks?status=done", headers=user.headers).json()["total"] == 0
    assert_error(env.client.get("/api/tasks?status=bogus", headers=user.headers), 422, "validation_error")
    assert env.client.get("/api/tasks?pageSize=101", headers=user.headers).status_code in (400, 422)


def test_idempotency_key_replays_and_refuses_a_different_body(env: Env) -> None:
    user = env.user()
    key = f"k-{uuid.uuid4()}"
    body = {"type": "echo", "input": {"a": 1, "b": 2}}
    first = env.client.post("/api/tasks", json=body, headers={**user.headers, "Idempotency-Key": key})
    assert first.status_code == 201, first.text
    # Same request (keys reordered, explicit default): 200 and the same task.
    again = env.client.post(
        "/api/tasks",
        json={"input": {"b": 2, "a": 1}, "type": "echo", "priority": 5},
        headers={**user.headers, "Idempotency-Key": key},
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    # The key in the body works the same way.
    by_field = env.client.post("/api/tasks", json={**body, "idempotencyKey": key}, headers=user.headers)
    assert by_field.status_code == 200
    assert by_field.json()["id"] == first.json()["id"]

    different = env.client.post(
        "/api/tasks", json={"type": "echo", "input": {"a": 2}}, headers={**user.headers, "Idempotency-Key": key}
    )
    assert_error(different, 422, "idempotency_key_reused")
    assert env.count_tasks(user.id) == 1

    # Keys are per user: another user with the same key gets a task of their own.
    other = env.user()
    theirs = env.client.post("/api/tasks", json=body, headers={**other.headers, "Idempotency-Key": key})
    assert theirs.status_code == 201
    assert theirs.json()["id"] != first.json()["id"]

    assert_error(
        env.client.post("/api/tasks", json=body, headers={**user.headers, "Idempotency-Key": "k" * 256}),
        422,
        "validation_error",
    )
    mismatch = env.client.post(
        "/api/tasks", json={**body, "idempotencyKey": "one"}, headers={**user.headers, "Idempotency-Key": "two"}
    )
    assert_error(mismatch, 422, "validation_error")


def test_batch_creates_all_in_order(env: Env) -> None:
    user = env.user()
    r = env.client.post(
        "/api/tasks/batch",
        json={"tasks": [{"type": "t", "input": {"i": i}} for i in range(MAX_BATCH_SIZE)]},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text[:500]
    items = r.json()["items"]
    assert [t["input"]["i"] for t in items] == list(range(MAX_BATCH_SIZE))
    assert env.count_tasks(user.id) == MAX_BATCH_SIZE


@pytest.mark.parametrize(
    ("tasks", "status"),
    [
        ([{"type": "t"}] * (MAX_BATCH_SIZE + 1), (413, 422)),
        ([{"type": "t"}, {"type": "t", "priority": 10}], (422,)),
        ([{"type": "t"}, {"type": "t", "status": "done"}], (422,)),
        ([{"type": "t"}, {"type": "t", "input": "x" * (MAX_TASK_INPUT_BYTES + 10)}], (413,)),
        ([{"type": "t", "idempotencyKey": "a"}, {"type": "t", "idempotencyKey": "a"}], (422,)),
        ([], (422,)),
    ],
)
def test_bad_batch_creates_nothing(env: Env, tasks: list, status: tuple[int, ...]) -> None:
    user = env.user()
    r = env.client.post("/api/tasks/batch", json={"tasks": tasks}, headers=user.headers)
    assert r.status_code in status, r.text[:300]
    assert r.json()["requestId"] == r.headers["x-request-id"]
    assert env.count_tasks(user.id) == 0


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 422, "validation_error"),
        ({"type": ""}, 422, "validation_error"),
        ({"type": "x" * 129}, 422, "validation_error"),
        ({"type": "has space"}, 422, "validation_error"),
        ({"type": "t", "priority": -1}, 422, "validation_error"),
        ({"type": "t", "priority": 10}, 422, "validation_error"),
        ({"type": "t", "timeoutSeconds": 0}, 422, "validation_error"),
        ({"type": "t", "maxAttempts": 0}, 422, "validation_error"),
        ({"type": "t", "capabilities": ["x" * 65]}, 422, "validation_error"),
        ({"type": "t", "capabilities": [f"c{i}" for i in range(33)]}, 422, "validation_error"),
        ({"type": "t", "capabilities": ["a"], "agentId": "x"}, 422, "validation_error"),
        ({"type": "t", "runAt": "2030-01-01T00:00:00"}, 422, "validation_error"),
        ({"type": "t", "unknown": 1}, 422, "validation_error"),
        ({"type": "t", "status": "done"}, 422, "validation_error"),
        ({"type": "t", "ownerId": "someone"}, 422, "validation_error"),
        ({"type": "t", "attempt": 3}, 422, "validation_error"),
        ({"type": "t", "input": {"blob": "x" * MAX_TASK_INPUT_BYTES}}, 413, "payload_too_large"),
        ({"type": "t", "agentId": "00000000-0000-0000-0000-000000000000"}, 404, "not_found"),
    ],
)
def test_bad_input_is_refused_and_nothing_stored(env: Env, body: dict, status: int, error: str) -> None:
    user = env.user()
    assert_error(env.client.post("/api/tasks", json=body, headers=user.headers), status, error)
    assert env.count_tasks(user.id) == 0


def test_malformed_json_is_a_client_error(env: Env) -> None:
    user = env.user()
    r = env.client.post(
        "/api/tasks", content=b"{not json", headers={**user.headers, "Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422)
    assert env.count_tasks(user.id) == 0


def test_access_matrix_users_see_only_their_own_admin_sees_all(env: Env) -> None:
    alice = env.user()
    bob = env.user()
    admin = env.user(admin=True)
    task = env.submit(alice)

    random_id = str(uuid.uuid4())
    foreign = env.client.get(f"/api/tasks/{task['id']}", headers=bob.headers)
    missing = env.client.get(f"/api/tasks/{random_id}", headers=bob.headers)
    assert_error(foreign, 404, "not_found")
    assert {k: v for k, v in foreign.json().items() if k != "requestId"} == {
        k: v for k, v in missing.json().items() if k != "requestId"
    }
    assert_error(env.client.post(f"/api/tasks/{task['id']}/cancel", headers=bob.headers), 404, "not_found")
    assert task["id"] not in [t["id"] for t in env.client.get("/api/tasks", headers=bob.headers).json()["items"]]
    assert env.client.get("/api/tasks", headers=bob.headers).json()["total"] == 0
    assert env.rows("SELECT status FROM tasks WHERE id = :i", i=task["id"])[0][0] == "queued"

    assert env.client.get(f"/api/tasks/{task['id']}", headers=admin.headers).status_code == 200
    listed = env.client.get("/api/tasks?pageSize=100", headers=admin.headers).json()
    assert task["id"] in [t["id"] for t in listed["items"]]
    assert_error(env.client.get("/api/tasks"), 401, "unauthorized")


def test_pinning_needs_an_agent_the_user_may_use(env: Env) -> None:
    admin = env.user(admin=True)
    user = env.user()
    agents = {}
    for public in (True, False):
        r = env.client.post("/api/agents", json={"name": "a", "isPublic": public}, headers=admin.headers)
        agents[public] = r.json()["id"]
    pinned = env.submit(user, {"type": "t", "agentId": agents[True]})
    assert pinned["pinnedAgentId"] == agents[True]
    assert_error(
        env.client.post("/api/tasks", json={"type": "t", "agentId": agents[False]}, headers=user.headers),
        404,
        "not_found",
    )
    assert env.submit(admin, {"type": "t", "agentId": agents[False]})["pinnedAgentId"] == agents[False]
    # The agentId filter never reveals other users' tasks.
    other = env.user()
    assert env.client.get(f"/api/tasks?agentId={agents[True]}", headers=other.headers).json()["total"] == 0
    assert env.client.get(f"/api/tasks?agentId={agents[True]}", headers=user.headers).json()["total"] == 1


async def test_cancel_queued_task_is_never_dispatched(env: Env, sched: SchedulerClient, sched_service) -> None:
    user = env.user()
    task = env.submit(user)
    r = env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "canceled"
    assert body["finishedAt"] is not None
    assert body["events"][-1]["status"] == "canceled"
    assert sum((await sched.queue_depths()).values()) == 0
    assert await sched_service.run_until_idle() == 0
    assert env.rows("SELECT action FROM audit_log WHERE target_id = :i", i=task["id"]) == [("task.cancel",)]

    again = env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert_error(again, 409, "task_not_runnable")


def test_cancel_of_a_task_redis_never_heard_of(env: Env) -> None:
    """The crash between commit and enqueue: the row is canceled in the database alone."""
    user = env.user()
    task = env.submit(user)
    env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    # A second row, inserted behind Redis' back.
    [(owner,)] = env.rows("SELECT owner_id FROM tasks WHERE id = :i", i=task["id"])
    ghost = str(uuid.uuid4())
    with env.db.begin() as conn:
        import sqlalchemy as sa

        from api.db.base import UTCDateTime

        now = dt.datetime.now(dt.UTC)
        conn.execute(
            sa.text(
                "INSERT INTO tasks (id, owner_id, type, input, priority, capabilities, timeout_s, max_attempts,"
                " status, attempt, seq, created_at, updated_at) VALUES (:id, :o, 't', '{}', 5, '[]', 60, 3,"
                " 'queued', 0, 1, :now, :now)"
            ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
            {"id": ghost, "o": owner, "now": now},
        )
    r = env.client.post(f"/api/tasks/{ghost}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"


def test_concurrent_submissions_with_one_key_make_one_task(env: Env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    user = env.user()
    headers = {**user.headers, "Idempotency-Key": f"race-{uuid.uuid4()}"}

    def post(_: int) -> tuple[int, str]:
        r = env.client.post("/api/tasks", json={"type": "echo", "input": {"x": 1}}, headers=headers)
        return r.status_code, r.json().get("id", r.text)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, range(8)))
    assert sorted(code for code, _ in answers).count(201) == 1, answers
    assert {code for code, _ in answers} <= {200, 201}
    assert len({task_id for _, task_id in answers}) == 1
    assert env.count_tasks(user.id) == 1
