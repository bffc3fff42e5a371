"""The result writer's one-statement batches on PostgreSQL: sent on the app's `DirectExecutor`, no session."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event

from api.db.session import direct_executor, executor_of
from api.tasks import outcome_rows
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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from api.db.session import DirectExecutor

pytestmark = pytest.mark.redis


@pytest.fixture
async def direct(sessionmaker: Any) -> AsyncIterator[DirectExecutor]:
    """The executor the app makes for its engine (PostgreSQL only; SQLite keeps the session path)."""
    executor = direct_executor(sessionmaker.kw["bind"])
    if executor is None:
        pytest.skip("the direct path is PostgreSQL's")
    yield executor
    await executor.close()


async def _assigned(env: Env, sched: Any, sched_service: Any, count: int) -> tuple[list[str], str]:
    user = env.user()
    ids = [env.submit(user, {"type": "echo", "input": {"i": i}})["id"] for i in range(count)]
    return ids, await dispatch_to_new_agent(env, sched, sched_service, user.id)


def _statements(sessionmaker: Any) -> tuple[list[str], Any]:
    seen: list[str] = []

    def listener(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(sessionmaker.kw["bind"].sync_engine, "before_cursor_execute", listener)
    return seen, listener


async def test_results_that_are_one_statement_skip_the_session(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any, direct: DirectExecutor
) -> None:
    """A lone result, and a batch of one kind, are one UPDATE on the direct executor: no SQLAlchemy execution,
    the row gets its whole attempt, the recorder is told so, and a resend changes nothing."""
    ids, agent = await _assigned(env, sched, sched_service, 3)
    writer = ResultWriter(sessionmaker)
    seen, listener = _statements(sessionmaker)

    async def record(task_id: str, output: Any) -> Any:
        async with sessionmaker() as session:
            return await TaskService(session, sched, writer=writer).record_result(task_id, 1, agent, output)

    try:
        lone = await record(ids[0], {"n": 0})
        together = await asyncio.gather(record(ids[1], {"n": 1}), record(ids[2], {"n": 2}))
        resent = await record(ids[0], {"late": 1})
    finally:
        event.remove(sessionmaker.kw["bind"].sync_engine, "before_cursor_execute", listener)
    assert seen == [], seen
    assert all(a.ack and not a.duplicate for a in (lone, *together))
    assert resent.ack
    assert resent.duplicate
    for n, task_id in enumerate(ids):
        row = await task_row(sessionmaker, task_id)
        assert (row.status, row.result, row.attempt, row.assigned_agent_id) == ("done", {"n": n}, 1, agent)
        assert row.started_at is not None
        assert row.finished_at is not None
        assert [e[1] for e in row.history or ()][-3:] == ["assigned", "running", "done"], row.history
        assert writer.committed.get(task_id) is not None


async def test_a_direct_write_that_fails_after_its_commit_is_not_applied_twice(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any, direct: DirectExecutor, monkeypatch: Any
) -> None:
    """The connection fails after the UPDATE committed: the writer runs it again through a session, which
    matches nothing (the slot is filled); the agent is acked, the row holds the one result."""
    (task_id,), agent = await _assigned(env, sched, sched_service, 1)
    writer = ResultWriter(sessionmaker)
    calls: list[int] = []

    async def committed_then_lost(executor: DirectExecutor, writes: Any) -> Any:
        calls.append(len(writes))
        await outcome_rows.apply_direct(executor, writes)
        raise OSError("connection lost after the commit")

    monkeypatch.setattr("api.tasks.result_writer.apply_direct", committed_then_lost)
    async with sessionmaker() as session:
        answer = await TaskService(session, sched, writer=writer).record_result(task_id, 1, agent, {"ok": 1})
    assert calls == [1]
    assert answer.ack
    assert not answer.duplicate
    row = await task_row(sessionmaker, task_id)
    assert (row.status, row.result) == ("done", {"ok": 1})
    assert [e[1] for e in row.history or ()].count("done") == 1, row.history


async def test_a_failed_direct_write_goes_through_a_session(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any, direct: DirectExecutor, monkeypatch: Any
) -> None:
    (task_id,), agent = await _assigned(env, sched, sched_service, 1)
    writer = ResultWriter(sessionmaker)

    async def down(*_: Any) -> Any:
        raise OSError("connection refused")

    monkeypatch.setattr("api.tasks.result_writer.apply_direct", down)
    async with sessionmaker() as session:
        answer = await TaskService(session, sched, writer=writer).record_result(task_id, 1, agent, {"ok": 2})
    assert answer.ack
    assert (await task_row(sessionmaker, task_id)).result == {"ok": 2}


async def test_a_closed_executor_is_not_used(sessionmaker: Any, direct: DirectExecutor) -> None:
    engine = sessionmaker.kw["bind"]
    assert executor_of(engine) is direct
    await direct.close()
    assert executor_of(engine) is None
