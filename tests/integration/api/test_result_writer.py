"""The batched result writer: many agents' outcomes in one transaction, acked only after it commits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from api.db.base import utcnow
from api.db.models.tasks import Task
from api.tasks.result_writer import ResultWriter
from api.tasks.service import TaskService
from tests.integration.api.test_recorder import dispatch_to_new_agent, task_row
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


async def _running(
    env: Env, sched: Any, sched_service: Any, count: int, *, accept: bool = True
) -> tuple[list[str], str]:
    """`count` tasks assigned to a new agent; accepted unless `accept` is False (the result implies it then)."""
    user = env.user()
    ids = [env.submit(user, {"type": "echo", "input": {"i": i}})["id"] for i in range(count)]
    agent = await dispatch_to_new_agent(env, sched, sched_service, user.id)
    for task_id in ids:
        if accept:
            assert (await sched.accept(task_id, 1, agent)).outcome == "ok"
    return ids, agent


async def test_concurrent_results_commit_together_and_each_caller_is_acked(
    env: Env, sched, sched_service, sessionmaker
) -> None:
    ids, agent = await _running(env, sched, sched_service, 4)
    writer = ResultWriter(sessionmaker)
    commits: list[int] = []
    engine = sessionmaker.kw["bind"].sync_engine
    listener = lambda conn: commits.append(1)  # noqa: E731 - a one-line hook
    event.listen(engine, "commit", listener)
    try:
        # Redis first (the fence), then every commit wait at once: they share one transaction.
        for task_id in ids:
            assert (await sched.complete(task_id, 1, agent)).outcome == "ok"
        now = utcnow()
        await asyncio.gather(
            *(
                writer.write(
                    "result",
                    {"b_id": t, "b_output": {"t": t} if n else None, "b_attempt": 1, "b_agent": agent}
                    | {"b_now": now, "b_seq": -1},
                )
                for n, t in enumerate(ids)
            )
        )
    finally:
        event.remove(engine, "commit", listener)
    assert len(commits) == 1, "the four results were not committed in one transaction"
    for n, task_id in enumerate(ids):
        row = await task_row(sessionmaker, task_id)
        assert (row.status, row.result, row.attempt) == ("done", {"t": task_id} if n else None, 1)

    # A resend is a duplicate and changes nothing (the slot is filled, JSON null included).
    async with sessionmaker() as session:
        again = await TaskService(session, sched, writer=writer).record_result(ids[0], 1, agent, {"late": 1})
    assert again.ack
    assert again.duplicate
    assert (await task_row(sessionmaker, ids[0])).result is None


async def test_a_failed_batch_fails_every_waiter_and_nothing_is_acked(
    env: Env, sched, sched_service, sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, agent = await _running(env, sched, sched_service, 3)
    writer = ResultWriter(sessionmaker)

    async def broken(*_: Any, **__: Any) -> None:
        raise ConnectionError("database down")

    monkeypatch.setattr("api.tasks.result_writer.apply_writes", broken)

    async def record(task_id: str) -> Any:
        async with sessionmaker() as session:
            return await TaskService(session, sched, writer=writer).record_result(task_id, 1, agent, {"ok": 1})

    answers = await asyncio.gather(*(record(t) for t in ids), return_exceptions=True)
    assert all(isinstance(a, ConnectionError) for a in answers), answers
    for task_id in ids:
        row = await task_row(sessionmaker, task_id)
        assert row.result is None

    # The agents resend: Redis says duplicate, and the write goes through now.
    monkeypatch.undo()
    resent = await asyncio.gather(*(record(t) for t in ids))
    assert all(a.ack and a.duplicate for a in resent)
    async with sessionmaker() as session:
        rows = [await session.get(Task, t) for t in ids]
    assert all(r is not None and (r.status, r.result) == ("done", {"ok": 1}) for r in rows)


async def test_a_lone_result_is_one_update_in_autocommit(env: Env, sched, sched_service, sessionmaker) -> None:
    """A batch of one needs no transaction around its one UPDATE: no BEGIN/COMMIT round trips, still durable
    before the ack (the statement commits by itself)."""
    (task_id,), agent = await _running(env, sched, sched_service, 1)
    writer = ResultWriter(sessionmaker)
    autocommit: list[bool] = []
    engine = sessionmaker.kw["bind"].sync_engine

    def listener(conn: Any, *_: Any) -> None:  # the level SQLAlchemy set on the connection, on any database
        autocommit.append(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")

    event.listen(engine, "before_cursor_execute", listener)
    try:
        async with sessionmaker() as session:
            answer = await TaskService(session, sched, writer=writer).record_result(task_id, 1, agent, {"ok": 1})
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert answer.ack
    assert not answer.duplicate
    assert autocommit == [True], autocommit  # the writer's one statement, outside any transaction
    row = await task_row(sessionmaker, task_id)
    assert (row.status, row.result, row.attempt) == ("done", {"ok": 1}, 1)


async def test_a_batch_of_results_is_one_statement_and_each_row_gets_its_whole_attempt(
    env: Env, sched, sched_service, sessionmaker
) -> None:
    """On PostgreSQL the batch's rows travel as one JSON array in one UPDATE, run in autocommit (one statement
    is atomic alone); each row still gets its output, its attempt's statuses and its start time."""
    ids, agent = await _running(env, sched, sched_service, 4, accept=False)
    writer = ResultWriter(sessionmaker)
    executed: list[tuple[bool, bool]] = []
    engine = sessionmaker.kw["bind"].sync_engine

    def listener(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, executemany: bool) -> None:
        executed.append((conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT", executemany))

    async def record(n: int, task_id: str) -> Any:
        async with sessionmaker() as session:
            return await TaskService(session, sched, writer=writer).record_result(task_id, 1, agent, {"n": n})

    event.listen(engine, "before_cursor_execute", listener)
    try:
        answers = await asyncio.gather(*(record(n, t) for n, t in enumerate(ids)))
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert all(a.ack and not a.duplicate for a in answers)
    if engine.dialect.name == "postgresql":
        assert executed == [(True, False)], executed
    for n, task_id in enumerate(ids):
        row = await task_row(sessionmaker, task_id)
        assert (row.status, row.result, row.attempt, row.assigned_agent_id) == ("done", {"n": n}, 1, agent)
        assert row.started_at is not None
        assert row.finished_at is not None
        statuses = [e[1] for e in row.history or ()]
        assert statuses[-3:] == ["assigned", "running", "done"], row.history
        assert [e[0] for e in row.history or ()] == sorted(e[0] for e in row.history or ())
    # Every row of the statement matched: the writer tells its recorder the attempts are whole on their rows.
    assert all(writer.committed.get(task_id) is not None for task_id in ids)


async def test_a_task_twice_in_one_batch_keeps_its_first_copy(env: Env, sched, sched_service, sessionmaker) -> None:
    """A resent outcome landing in the same batch as its first copy: the copies are applied in arrival order
    (on PostgreSQL in statements of their own, a row being updated once per statement), so the first fills
    the slot and the second finds it filled; both callers are answered once the batch commits."""
    (task_id, other), agent = await _running(env, sched, sched_service, 2)
    for t in (task_id, other):
        assert (await sched.complete(t, 1, agent)).outcome == "ok"
    writer = ResultWriter(sessionmaker)
    now = utcnow()

    def params(t: str, output: Any) -> dict[str, Any]:
        return {"b_id": t, "b_output": output, "b_attempt": 1, "b_agent": agent, "b_now": now, "b_seq": -1}

    await asyncio.gather(
        writer.write("result", params(task_id, {"copy": 1})),
        writer.write("result", params(other, {"copy": "other"})),
        writer.write("result", params(task_id, {"copy": 2})),
    )
    assert (await task_row(sessionmaker, task_id)).result == {"copy": 1}
    assert (await task_row(sessionmaker, other)).result == {"copy": "other"}
