"""`/api/schedules` over REST, and firing with a controlled clock against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from api.schedules.firing import fire_due, occurrence_key
from api.settings import OpsSettings
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Caller,
    Env,
    assert_error,
    make_env_fixture,
    sched_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis

OPS = OpsSettings(schedule_misfire_grace_s=30)


@pytest.fixture(name="env")
def env_fixture(make_env: Any) -> Env:
    env: Env = make_env(TASKYARD_API_SCHEDULE_MIN_INTERVAL_S=10)
    return env


def create(env: Env, user: Caller, **body: Any) -> dict[str, Any]:
    payload = {"name": "s", "task": {"type": "echo", "input": {"n": 1}, "capabilities": ["nobody-has-this"]}, **body}
    r = env.client.post("/api/schedules", json=payload, headers=user.headers)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def tasks_of(env: Env, schedule_id: str) -> list[Any]:
    return env.rows(
        "SELECT id, idempotency_key, status FROM tasks WHERE idempotency_key LIKE :k ORDER BY idempotency_key",
        k=f"schedule:{schedule_id}:%",
    )


def runs(env: Env, user: Caller, schedule_id: str) -> list[dict[str, Any]]:
    r = env.client.get(f"/api/schedules/{schedule_id}/runs", headers=user.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_crud_with_next_fire_times_and_owner_scope(env: Env) -> None:
    user = env.user()
    other = env.user()
    body = create(env, user, cron="0 9 * * 1-5", timezone="Europe/Paris", overlapPolicy="skip")
    assert body["cron"] == "0 9 * * 1-5"
    assert body["misfirePolicy"] == "fire_once"
    times = [parse(t) for t in body["nextFireTimes"]]
    assert len(times) == 5
    assert times == sorted(times)
    assert all(t.astimezone(dt.UTC).hour in (7, 8) for t in times)  # 09:00 Paris
    assert all(t.weekday() < 5 for t in times)

    sid = body["id"]
    assert env.client.get(f"/api/schedules/{sid}", headers=user.headers).json()["id"] == sid
    assert_error(env.client.get(f"/api/schedules/{sid}", headers=other.headers), 404, "not_found")
    assert_error(env.client.post(f"/api/schedules/{sid}/pause", headers=other.headers), 404, "not_found")
    assert env.client.get("/api/schedules", headers=other.headers).json()["total"] == 0
    assert env.client.get("/api/schedules", headers=user.headers).json()["total"] == 1

    paused = env.client.post(f"/api/schedules/{sid}/pause", headers=user.headers).json()
    assert paused["paused"] is True
    assert paused["nextFireTimes"] == []
    resumed = env.client.post(f"/api/schedules/{sid}/resume", headers=user.headers).json()
    assert len(resumed["nextFireTimes"]) == 5

    r = env.client.patch(
        f"/api/schedules/{sid}", json={"intervalSeconds": 3600, "name": "hourly"}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    assert "cron" not in r.json()  # switched to an interval: the cron is gone
    assert r.json()["intervalSeconds"] == 3600
    gaps = {
        (parse(b) - parse(a)).total_seconds() for a, b in zip(r.json()["nextFireTimes"], r.json()["nextFireTimes"][1:])
    }
    assert gaps == {3600}

    assert env.client.delete(f"/api/schedules/{sid}", headers=user.headers).status_code == 204
    assert_error(env.client.get(f"/api/schedules/{sid}", headers=user.headers), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"cron": "* * * * * *"}, 422),
        ({"cron": "not a cron"}, 422),
        ({"cron": "0 0 30 2 *"}, 422),
        ({"cron": "0 9 * * *", "timezone": "Mars/Base"}, 422),
        ({"cron": "0 9 * * *", "intervalSeconds": 60}, 422),
        ({}, 422),
        ({"intervalSeconds": 5}, 422),
        ({"cron": "0 9 * * *", "name": "x" * 201}, 422),
        ({"cron": "0 9 * * *", "misfirePolicy": "sometimes"}, 422),
        ({"cron": "0 9 * * *", "task": {"type": "echo", "runAt": "2030-01-01T00:00:00Z"}}, 422),
        ({"cron": "0 9 * * *", "task": {"type": "echo", "idempotencyKey": "k"}}, 422),
        ({"cron": "0 9 * * *", "task": {"type": "echo", "bogus": 1}}, 422),
    ],
)
def test_bad_schedules_are_refused_with_the_error_body(env: Env, body: dict[str, Any], status: int) -> None:
    user = env.user()
    payload = {"name": "s", "task": {"type": "echo"}, **body}
    r = env.client.post("/api/schedules", json=payload, headers=user.headers)
    assert r.status_code == status, r.text
    assert set(r.json()) >= {"error", "message", "code", "requestId"}


async def test_each_occurrence_fires_once_even_from_concurrent_firers(env: Env, sched, sessionmaker) -> None:
    user = env.user()
    body = create(env, user, intervalSeconds=60)
    sid = body["id"]
    first = parse(body["nextFireTimes"][0])

    assert await fire_due(sessionmaker, sched, OPS, now=first - dt.timedelta(seconds=1)) == 0
    assert tasks_of(env, sid) == []
    # Three firers at once (several jobs processes): one task for the occurrence.
    await asyncio.gather(*(fire_due(sessionmaker, sched, OPS, now=first + dt.timedelta(seconds=1)) for _ in range(3)))
    rows = tasks_of(env, sid)
    assert [r[1] for r in rows] == [occurrence_key(sid, first)]
    assert rows[0][2] == "queued"
    assert await fire_due(sessionmaker, sched, OPS, now=first + dt.timedelta(seconds=2)) == 0

    second = first + dt.timedelta(seconds=60)
    assert await fire_due(sessionmaker, sched, OPS, now=second) == 1
    assert len(tasks_of(env, sid)) == 2
    history = runs(env, user, sid)
    assert [(parse(h["fireAt"]), h["outcome"]) for h in history] == [(second, "submitted"), (first, "submitted")]
    assert {h["taskId"] for h in history} == {r[0] for r in tasks_of(env, sid)}
    view = env.client.get(f"/api/schedules/{sid}", headers=user.headers).json()
    assert parse(view["lastFireAt"]) == second
    assert parse(view["nextFireTimes"][0]) == second + dt.timedelta(seconds=60)


async def test_misfire_policies(env: Env, sched, sessionmaker) -> None:
    user = env.user()
    once = create(env, user, intervalSeconds=60, misfirePolicy="fire_once")
    skip = create(env, user, intervalSeconds=60, misfirePolicy="skip")
    # 45 s after an occurrence: past the 30 s grace, so every occurrence so far was missed.
    late = max(parse(once["nextFireTimes"][0]), parse(skip["nextFireTimes"][0])) + dt.timedelta(minutes=10, seconds=45)

    await fire_due(sessionmaker, sched, OPS, now=late)
    assert len(tasks_of(env, once["id"])) == 1  # one catch-up run for ten missed occurrences
    assert tasks_of(env, skip["id"]) == []
    [skipped] = runs(env, user, skip["id"])
    assert skipped["outcome"] == "skipped_misfire"
    assert "missed" in skipped["detail"]
    # Both continue on time afterwards.
    for body in (once, skip):
        nxt = parse(env.client.get(f"/api/schedules/{body['id']}", headers=user.headers).json()["nextFireTimes"][0])
        assert late < nxt <= late + dt.timedelta(seconds=60)


async def test_overlap_skip_waits_for_the_previous_task(env: Env, sched, sessionmaker) -> None:
    user = env.user()
    body = create(env, user, intervalSeconds=60, overlapPolicy="skip")
    sid = body["id"]
    first = parse(body["nextFireTimes"][0])
    await fire_due(sessionmaker, sched, OPS, now=first)
    [(task_id, _, status)] = tasks_of(env, sid)
    assert status == "queued"  # nobody can run it (capability nobody has)

    await fire_due(sessionmaker, sched, OPS, now=first + dt.timedelta(seconds=60))
    assert len(tasks_of(env, sid)) == 1
    assert runs(env, user, sid)[0]["outcome"] == "skipped_overlap"

    assert env.client.post(f"/api/tasks/{task_id}/cancel", headers=user.headers).status_code == 200
    await fire_due(sessionmaker, sched, OPS, now=first + dt.timedelta(seconds=120))
    assert len(tasks_of(env, sid)) == 2
    assert runs(env, user, sid)[0]["outcome"] == "submitted"


async def test_a_paused_schedule_does_not_fire(env: Env, sched, sessionmaker) -> None:
    user = env.user()
    body = create(env, user, intervalSeconds=60)
    env.client.post(f"/api/schedules/{body['id']}/pause", headers=user.headers)
    await fire_due(sessionmaker, sched, OPS, now=parse(body["nextFireTimes"][0]) + dt.timedelta(seconds=1))
    assert tasks_of(env, body["id"]) == []
