"""Group commit of keyless single submits (`SubmitGroup`) on real PostgreSQL and Redis: submits that
arrive while a group is written share the next INSERT; a bad row fails alone. Counts, never timings."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from api.db.base import utcnow
from api.db.models.tasks import Task
from api.db.session import DirectExecutor
from api.tasks import history
from api.tasks.submit_group import SubmitGroup
from scheduler.client import SchedulerClient
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_settings_fixture,
)

pytestmark = pytest.mark.redis


def _task(owner_id: str, n: int) -> Task:
    now = utcnow()
    return Task(
        id=str(uuid.uuid4()),
        owner_id=owner_id,
        type="echo",
        input={"n": n},
        priority=0,
        agent_id=None,
        capabilities=[],
        timeout_s=60,
        max_attempts=1,
        run_at=None,
        idempotency_key=None,
        request_hash="0" * 64,
        status="queued",
        attempt=0,
        seq=1,
        created_at=now,
        updated_at=now,
        history=[history.entry(1, "queued", attempt=0, agent_id=None, data=None, at=now)],
    )


async def _submit_together(
    env: Env, sched: SchedulerClient, tasks: list[Task], *, group_connection_dies: bool = False
) -> tuple[list[bool], list[int]]:
    """Every task handed to one group in the same loop turn; the answers and the rows of each INSERT sent.
    `group_connection_dies`: a multi-row INSERT fails as on a dropped connection (nothing sent)."""
    if not env.database_url.startswith("postgresql"):
        pytest.skip("the direct INSERT is PostgreSQL only")
    engine = create_async_engine(env.database_url)
    direct = DirectExecutor(engine)
    sent: list[int] = []
    execute = direct.execute

    async def counting(sql: str, params: Any) -> None:
        sent.append(sql.count("), (") + 1)
        if group_connection_dies and sent[-1] > 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        await execute(sql, params)

    direct.execute = counting  # type: ignore[method-assign]
    group = SubmitGroup(direct, lambda: sched)
    try:
        answers = await asyncio.gather(*(group.insert(t, group.params(t)) for t in tasks))
    finally:
        await direct.close()
        await engine.dispose()
    return list(answers), sent


async def test_submits_arriving_during_a_write_share_the_next_insert(env: Env, sched: SchedulerClient) -> None:
    user = env.user()
    tasks = [_task(user.id, n) for n in range(10)]

    answers, sent = await _submit_together(env, sched, tasks)

    assert answers == [True] * 10
    assert sent == [1, 9]  # the first is written at once; the nine behind it in one statement
    ids = {t.id for t in tasks}
    stored = env.rows("SELECT id, input, status FROM tasks WHERE owner_id = :o", o=user.id)
    assert {row[0] for row in stored} == ids
    assert sorted(row[1]["n"] for row in stored) == list(range(10))
    assert await sched.known_task_ids(ids) == ids


async def test_a_bad_row_in_a_group_fails_alone(env: Env, sched: SchedulerClient) -> None:
    user = env.user()
    tasks = [_task(user.id if n != 5 else "no-such-user", n) for n in range(10)]

    answers, sent = await _submit_together(env, sched, tasks)

    assert answers == [True] * 5 + [False] + [True] * 4
    assert sent == [1, 9] + [1] * 9  # the group's INSERT failed: its rows were retried one by one
    good = {t.id for n, t in enumerate(tasks) if n != 5}
    assert {row[0] for row in env.rows("SELECT id FROM tasks WHERE owner_id = :o", o=user.id)} == good
    assert await sched.known_task_ids({t.id for t in tasks}) == good


async def test_a_group_whose_connection_fails_sends_each_submit_back_alone(env: Env, sched: SchedulerClient) -> None:
    user = env.user()
    tasks = [_task(user.id, n) for n in range(10)]

    answers, sent = await _submit_together(env, sched, tasks, group_connection_dies=True)

    # Not retried row by row on a dead connection: each submit retries through its own session.
    assert answers == [True] + [False] * 9
    assert sent == [1, 9]
    assert {row[0] for row in env.rows("SELECT id FROM tasks WHERE owner_id = :o", o=user.id)} == {tasks[0].id}
    assert await sched.known_task_ids({t.id for t in tasks}) == {tasks[0].id}
