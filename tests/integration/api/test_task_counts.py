"""`taskyard_tasks{status}` from counters kept as tasks change (real Redis and database), never a recount per scrape.

Finished counts are seeded once from the database: the database is shared by the whole test run, so every
check compares the gauge with the database's own count at that moment, not with a fixed number.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from api.db.base import utcnow
from api.jobs.retention import purge
from api.settings import OpsSettings
from api.tasks.service import TaskService
from scheduler.types import AgentSpec
from tests.integration.api.test_metrics import scrape
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

TERMINAL = ("done", "failed", "canceled")
LONG_AGO = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)


def gauges(env: Env) -> dict[str, int]:
    return {labels[0][1]: int(v) for labels, v in scrape(env)["taskyard_tasks"].items()}


def finished_in_db(env: Env) -> dict[str, int]:
    rows = env.rows("SELECT status, count(*) FROM tasks WHERE status IN ('done', 'failed', 'canceled') GROUP BY status")
    out = dict.fromkeys(TERMINAL, 0)
    out.update({status: int(n) for status, n in rows})
    return out


def seeds(env: Env) -> int:
    counts = env.client.app.state.metrics._counts
    return 0 if counts is None else int(counts.seeds)


async def test_the_gauges_follow_tasks_from_submit_to_purge(
    env: Env, make_env: Any, sched: Any, sched_service: Any, sessionmaker: Any
) -> None:
    user = env.user()
    capability = "cap-" + uuid.uuid4().hex[:8]
    ids = [env.submit(user, {"type": "echo", "capabilities": [capability], "maxAttempts": 1})["id"] for _ in range(5)]
    later = env.submit(user, {"type": "echo", "runAt": "2999-01-01T00:00:00Z"})["id"]

    seen = gauges(env)
    assert seeds(env) == 1
    assert (seen["queued"], seen["scheduled"], seen["assigned"], seen["running"]) == (5, 1, 0, 0)
    assert {s: seen[s] for s in TERMINAL} == finished_in_db(env)

    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (capability,), 5), lease_s=30)
    await sched_service.run_until_idle()
    assert (await sched.accept(ids[0], 1, agent)).outcome == "ok"
    seen = gauges(env)
    assert (seen["queued"], seen["assigned"], seen["running"]) == (0, 4, 1)

    async with sessionmaker() as session:
        service = TaskService(session, sched)
        for task_id in ids[:2]:
            assert (await service.record_result(task_id, 1, agent, {"ok": True})).ack
        failed = await service.record_failure(
            ids[2], 1, agent, error="model_refused", message="no", retryable=False, retry_delay_s=None
        )
        assert failed.status == "failed"
    r = env.client.post(f"/api/tasks/{ids[3]}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    r = env.client.post(f"/api/tasks/{later}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text

    seen = gauges(env)
    assert (seen["queued"], seen["scheduled"], seen["assigned"], seen["running"]) == (0, 0, 1, 0)
    assert {s: seen[s] for s in TERMINAL} == finished_in_db(env)
    # A second replica reads the same numbers, and seeds nothing: the counters are already there.
    other = make_env()
    assert gauges(other) == seen
    assert seeds(other) == 0

    # The retention purge subtracts the rows it deletes.
    with env.db.begin() as conn:
        conn.execute(
            sa.text("UPDATE tasks SET finished_at = :f WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"f": LONG_AGO, "ids": ids[:4]},
        )
    before = finished_in_db(env)
    settings = OpsSettings(retention_tasks_days=30, retention_batch_size=2)
    report = await purge(sessionmaker, settings, now=utcnow(), forget=sched.forget_finished)
    assert report.tasks >= 4
    after = finished_in_db(env)
    assert after["done"] <= before["done"] - 2
    seen = gauges(other)
    assert {s: seen[s] for s in TERMINAL} == after
    assert seeds(env) == 1


async def test_counters_are_seeded_again_once_when_the_hash_is_lost(
    env: Env, make_env: Any, sched: Any, sched_service: Any, sessionmaker: Any, redis_client: Any
) -> None:
    user = env.user()
    capability = "cap-" + uuid.uuid4().hex[:8]
    ids = [env.submit(user, {"type": "echo", "capabilities": [capability]})["id"] for _ in range(2)]
    gauges(env)
    other = make_env()
    gauges(other)
    assert seeds(env) + seeds(other) == 1

    # Redis loses the hash; a task finishes before anyone scrapes (its script recreates the hash, unseeded).
    await redis_client.delete(sched.keys.task_counts())
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (capability,), 2), lease_s=30)
    await sched_service.run_until_idle()
    async with sessionmaker() as session:
        assert (await TaskService(session, sched).record_result(ids[0], 1, agent, {"ok": True})).ack

    seen = gauges(other)
    assert seeds(env) + seeds(other) == 2
    assert {s: seen[s] for s in TERMINAL} == finished_in_db(env)
    # Later scrapes, on either replica, read the counters: no second seed, and they keep counting.
    async with sessionmaker() as session:
        assert (await TaskService(session, sched).record_result(ids[1], 1, agent, {"ok": True})).ack
    seen = gauges(env)
    assert gauges(other) == seen
    assert seeds(env) + seeds(other) == 2
    assert {s: seen[s] for s in TERMINAL} == finished_in_db(env)
    assert (seen["assigned"], seen["running"]) == (0, 0)


async def test_a_task_canceled_in_the_database_alone_is_counted(env: Env, sched: Any, redis_client: Any) -> None:
    """Redis lost the task (its hash and queue entry): the cancel finishes it in the database alone, and no
    script counts it, so the cancel adds it to the counter itself (before, it waited for the next seed)."""
    user = env.user()
    capability = "cap-" + uuid.uuid4().hex[:8]
    task_id = env.submit(user, {"type": "echo", "capabilities": [capability]})["id"]
    gauges(env)  # seeded now
    before = seeds(env)
    route = (await redis_client.hget(sched.keys.task(task_id), "route")).decode()
    await redis_client.delete(sched.keys.task(task_id))
    await redis_client.zrem(sched.keys.queue(route), task_id)
    assert await sched.known_task_ids({task_id}) == set()

    r = env.client.post(f"/api/tasks/{task_id}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    seen = gauges(env)
    assert {s: seen[s] for s in TERMINAL} == finished_in_db(env)
    assert seeds(env) == before  # counted, not reseeded
