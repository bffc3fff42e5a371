"""Group commit of keyless single submits (`SubmitGroup`) on real PostgreSQL and Redis: submits that
arrive while a group is written share the next INSERT; a bad row fails alone; the enqueue follows the
answer, and a cancel that comes first is not undone by it. Counts, never timings."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import psycopg
import pytest
import redis.asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.auth.identity import CurrentUser
from api.db.base import utcnow
from api.db.session import DirectExecutor
from api.tasks import history
from api.tasks.service import TaskService
from api.tasks.submit_group import SubmitGroup
from scheduler.client import SchedulerClient
from scheduler.settings import SchedulerSettings
from scheduler.types import TaskSpec
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_settings_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis


class _Row:
    """A new row as a submit hands it to the group: its columns and its input's JSON."""

    def __init__(self, owner_id: str, n: int) -> None:
        now = utcnow()
        self.id = str(uuid.uuid4())
        self.input_json = msgspec.json.encode({"n": n})
        self.fields: dict[str, Any] = {
            "id": self.id,
            "owner_id": owner_id,
            "type": "echo",
            "input": {"n": n},
            "priority": 0,
            "agent_id": None,
            "capabilities": [],
            "timeout_s": 60,
            "max_attempts": 1,
            "run_at": None,
            "idempotency_key": None,
            "request_hash": None,
            "status": "queued",
            "attempt": 0,
            "seq": 1,
            "created_at": now,
            "updated_at": now,
            "history": [history.entry(1, "queued", attempt=0, agent_id=None, data=None, at=now)],
        }


def _task(owner_id: str, n: int) -> _Row:
    return _Row(owner_id, n)


def _rows_sent(params: Any) -> int:
    """How many rows one INSERT carried: one row's parameters, or a group's JSON array."""
    return 1 if len(params) > 1 else len(msgspec.json.decode(params[0]))


async def _submit_together(
    env: Env, sched: SchedulerClient, tasks: list[_Row], *, group_connection_dies: bool = False
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
        sent.append(_rows_sent(params))
        if group_connection_dies and sent[-1] > 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        await execute(sql, params)

    direct.execute = counting  # type: ignore[method-assign]
    group = SubmitGroup(direct, lambda: sched)
    try:
        answers = await asyncio.gather(*(group.insert(t.fields, t.input_json) for t in tasks))
        await group.drain()  # the enqueue follows the answers
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


class _HeldEnqueue(SchedulerClient):
    """The scheduler client, its enqueue held until `release` is set (the window between answer and enqueue)."""

    def __init__(self, redis_client: redis.asyncio.Redis, settings: SchedulerSettings) -> None:
        super().__init__(redis_client, prefix=settings.prefix, settings=settings)
        self.release = asyncio.Event()
        self.enqueued: list[bool] = []

    async def enqueue(self, spec: TaskSpec) -> bool:
        await self.release.wait()
        added = await super().enqueue(spec)
        self.enqueued.append(added)
        return added


async def test_the_answer_comes_before_the_enqueue_and_a_cancel_in_between_holds(
    env: Env,
    sched: SchedulerClient,
    redis_client: redis.asyncio.Redis,
    sched_settings: SchedulerSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    if not env.database_url.startswith("postgresql"):
        pytest.skip("the direct INSERT is PostgreSQL only")
    caller = env.user()
    user = CurrentUser(id=caller.id, email=caller.email, name="T", role="user", jti="j", token_exp=2**40)
    task = _task(user.id, 1)
    held = _HeldEnqueue(redis_client, sched_settings)
    engine = create_async_engine(env.database_url)
    direct = DirectExecutor(engine)
    group = SubmitGroup(direct, lambda: held)
    try:
        assert await group.insert(task.fields, task.input_json)  # answered: the row is committed ...
        assert env.rows("SELECT status FROM tasks WHERE id = :i", i=task.id) == [("queued",)]
        assert await sched.known_task_ids({task.id}) == set()  # ... and Redis has not heard of it yet

        # The client cancels at once: Redis does not know the task, so the database records the cancel alone.
        async with sessionmaker() as session:
            await TaskService(session, sched).cancel(user, task.id)
            await session.commit()

        held.release.set()
        await group.drain()
    finally:
        await direct.close()
        await engine.dispose()

    assert held.enqueued == [False]  # the late enqueue ran and found the task known: it stored nothing
    assert await redis_client.hget(sched.keys.task(task.id), "status") == b"canceled"
    assert set((await sched.queue_depths()).values()) == {0}
    status, history = env.rows("SELECT status, history FROM tasks WHERE id = :i", i=task.id)[0]
    assert status == "canceled"
    assert [(entry[0], entry[1]) for entry in history] == [(1, "queued"), (2, "canceled")]
