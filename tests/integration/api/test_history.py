"""A task's recorded history: complete after it runs, O(1) rows however much it reports, and whole
enough after Redis loses everything mid-flight (statuses on the task row, see api/tasks/history.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

import api.db.models  # noqa: F401 - registers every table
from api.db.base import Base
from api.db.models.tasks import Task, TaskEvent
from api.metrics import Metrics
from api.tasks import history
from api.tasks.history import read_events
from api.tasks.outcome_rows import apply_writes
from api.tasks.reconciler import Reconciler
from api.tasks.recorder import Recorder
from api.tasks.result_writer import writer_for
from api.tasks.service import TaskService
from scheduler.types import AgentSpec
from tests.integration.api.test_reconciler import wipe_prefix
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


async def recorded(sessionmaker: Any, task_id: str) -> list[TaskEvent]:
    async with sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return await read_events(session, task, limit=10_000)


async def test_a_task_with_a_thousand_progress_events_writes_one_row(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any
) -> None:
    user = env.user()
    capability = f"h-{uuid.uuid4().hex[:6]}"
    task_id = env.submit(user, {"type": "echo", "capabilities": [capability]})["id"]
    agent = f"agent-{capability}"
    await sched.agent_online(AgentSpec(agent, user.id, (capability,), 1), lease_s=60)
    assert await sched_service.run_until_idle() == 1
    assert (await sched.accept(task_id, 1, agent)).outcome == "ok"
    for i in range(1000):
        body = b'{"taskId":"%s","attempt":1,"data":{"i":%d}}' % (task_id.encode(), i)
        assert (await sched.progress(task_id, 1, agent, body)).outcome == "ok"

    statements: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split())[:40])

    engine = sessionmaker.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        async with sessionmaker() as session:
            assert (await TaskService(session, sched).record_result(task_id, 1, agent, {"answer": 42})).ack
        # The statuses only: progress reaches the recorder at every PROGRESS_MARK_EVERY-th seq (none below 1,024).
        # Nor the first status, which the row holds from the INSERT: assigned, running, done.
        assert await Recorder(sched, sessionmaker, consumer="history-test").drain() == 3
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    # Only the task row is written: no INSERT at all, whatever the number of progress events.
    assert not [s for s in statements if s.startswith("INSERT")], statements
    writes = [s for s in statements if s.startswith("UPDATE")]
    assert writes
    assert all(s.startswith("UPDATE tasks") for s in writes)
    assert len(writes) <= 2  # the result, then at most one for the recorder's transaction

    async with sessionmaker() as session:
        rows = await session.scalar(select(TaskEvent.id).where(TaskEvent.task_id == task_id).limit(1))
    assert rows is None
    events = await recorded(sessionmaker, task_id)
    assert [(e.seq, e.status) for e in events] == [(1, "queued"), (2, "assigned"), (3, "running"), (1004, "done")]

    body = env.client.get(f"/api/tasks/{task_id}", headers=user.headers).json()
    assert body["status"] == "done"
    assert body["result"] == {"answer": 42}
    assert [(e["type"], e["status"], e["attempt"]) for e in body["events"]] == [
        ("task/status", "queued", 0),
        ("task/status", "assigned", 1),
        ("task/status", "running", 1),
        ("task/status", "done", 1),
    ]
    assert body["events"][1]["agentId"] == agent


async def _quick_tasks(env: Env, sched: Any, sched_service: Any, n: int) -> tuple[list[str], str]:
    user = env.user()
    capability = f"q-{uuid.uuid4().hex[:6]}"
    ids = [env.submit(user, {"type": "echo", "capabilities": [capability]})["id"] for _ in range(n)]
    agent = f"agent-{capability}"
    await sched.agent_online(AgentSpec(agent, user.id, (capability,), n), lease_s=60)
    assert await sched_service.run_until_idle() == n
    return ids, agent


async def test_a_quick_task_costs_its_row_one_update_at_the_end(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any
) -> None:
    """The result (its accept implied) carries the attempt's earlier statuses onto the row; the recorder,
    applying the same events after it, finds nothing to write."""
    ids, agent = await _quick_tasks(env, sched, sched_service, 3)
    updated: list[int] = []

    def on_statement(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("UPDATE tasks"):
            updated.append(max(cursor.rowcount, 0))

    engine = sessionmaker.kw["bind"].sync_engine
    event.listen(engine, "after_cursor_execute", on_statement)
    try:
        async with sessionmaker() as session:
            service = TaskService(session, sched)
            for task_id in ids:
                assert (await service.record_result(task_id, 1, agent, {"id": task_id})).ack
        assert await Recorder(sched, sessionmaker, consumer="quick-test").drain() >= 3 * len(ids)
    finally:
        event.remove(engine, "after_cursor_execute", on_statement)
    assert sum(updated) == len(ids), updated
    for task_id in ids:
        events = await recorded(sessionmaker, task_id)
        assert [(e.seq, e.status, e.attempt) for e in events] == [
            (1, "queued", 0),
            (2, "assigned", 1),
            (3, "running", 1),
            (4, "done", 1),
        ]
        assert events[1].agent_id == agent
        async with sessionmaker() as session:
            task = await session.get(Task, task_id)
            assert task is not None
            assert task.started_at is not None
            assert task.result == {"id": task_id}
            assert [e[0] for e in task.history] == [1, 2, 3, 4]


async def test_events_the_result_writer_already_committed_cost_the_recorder_no_statement(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any
) -> None:
    """Results through the process' batch writer: the recorder of the same process reads their events, finds
    each attempt whole on its row as the writer noted it, and acknowledges them without a database statement;
    the history is the same as when it checks the rows, and the dispatch latency is still observed."""
    ids, agent = await _quick_tasks(env, sched, sched_service, 3)
    statements: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    async with sessionmaker() as session:
        service = TaskService(session, sched, writer=writer_for(sessionmaker))
        for task_id in ids:
            assert (await service.record_result(task_id, 1, agent, {"id": task_id})).ack
    metrics = Metrics()
    recorder = Recorder(sched, sessionmaker, consumer="skip-test", metrics=metrics)
    engine = sessionmaker.kw["bind"].sync_engine
    event.listen(engine, "after_cursor_execute", on_statement)
    try:
        assert await recorder.drain() == 3 * len(ids)  # the first status is not in the stream: the row has it
    finally:
        event.remove(engine, "after_cursor_execute", on_statement)
    assert statements == []
    assert metrics.recorder_skipped_events._value.get() == 3 * len(ids)
    # Measured from the `assigned` entries alone: they carry when their task was queued.
    latency_counts = [s.value for s in metrics.dispatch_latency.collect()[0].samples if s.name.endswith("_count")]
    assert latency_counts == [len(ids)]
    for task_id in ids:
        events = await recorded(sessionmaker, task_id)
        assert [(e.seq, e.status, e.attempt, e.agent_id) for e in events] == [
            (1, "queued", 0, None),
            (2, "assigned", 1, agent),
            (3, "running", 1, agent),
            (4, "done", 1, agent),
        ]

    # The recorder met this task's assignment before its result: that event takes the row path (the first
    # status is not in the stream); after the result, its remaining events are noted and skipped.
    (late,), late_agent = await _quick_tasks(env, sched, sched_service, 1)
    statements.clear()
    event.listen(engine, "after_cursor_execute", on_statement)
    try:
        assert await recorder.drain() == 1
        assert any("FROM tasks" in s for s in statements)
        async with sessionmaker() as session:
            service = TaskService(session, sched, writer=writer_for(sessionmaker))
            assert (await service.record_result(late, 1, late_agent, {"late": True})).ack
        statements.clear()
        assert await recorder.drain() == 2
        assert statements == []
    finally:
        event.remove(engine, "after_cursor_execute", on_statement)
    assert [(e.seq, e.status) for e in await recorded(sessionmaker, late)] == [
        (1, "queued"),
        (2, "assigned"),
        (3, "running"),
        (4, "done"),
    ]
    assert metrics.recorder_skipped_events._value.get() == 3 * len(ids) + 2


async def test_a_result_after_the_recorder_adds_only_what_the_row_lacks(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any
) -> None:
    """The other order (a recorder that applied the attempt's events first): no entry is written twice."""
    (task_id,), agent = await _quick_tasks(env, sched, sched_service, 1)
    assert (await sched.accept(task_id, 1, agent)).outcome == "ok"
    assert await Recorder(sched, sessionmaker, consumer="order-test").drain() >= 2
    async with sessionmaker() as session:
        assert (await TaskService(session, sched).record_result(task_id, 1, agent, {"late": True})).ack
    async with sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        assert [e[0] for e in task.history] == [1, 2, 3, 4]
        assert task.status == "done"
        assert task.result == {"late": True}


async def test_an_entry_another_replica_overtook_is_written_by_the_result_and_never_skipped(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any
) -> None:
    """Two API replicas share the events stream: one recorder may put `running` on the row while the
    other still holds `assigned` (its young task waits for the result). The result's UPDATE must still
    add `assigned`, and the note it leaves must not let this replica's recorder skip an entry that is not
    on the row: the history stays whole and in seq order."""
    (task_id,), agent = await _quick_tasks(env, sched, sched_service, 1)
    assert (await sched.accept(task_id, 1, agent)).outcome == "ok"
    running = history.entry(3, "running", attempt=1, agent_id=agent, data=None, at=dt.datetime.now(dt.UTC))
    async with sessionmaker() as session:  # the other replica's recorder: `running` only, seq moved to 3
        task = await session.get(Task, task_id)
        assert task is not None
        task.history, task.seq = [*(task.history or []), running], 3
        await session.commit()
    async with sessionmaker() as session:
        service = TaskService(session, sched, writer=writer_for(sessionmaker))
        assert (await service.record_result(task_id, 1, agent, {"ok": True})).ack
    await Recorder(sched, sessionmaker, consumer="overtaken-test").drain()
    assert [(e.seq, e.status) for e in await recorded(sessionmaker, task_id)] == [
        (1, "queued"),
        (2, "assigned"),
        (3, "running"),
        (4, "done"),
    ]


async def test_every_done_task_reads_queued_to_done_after_redis_is_emptied_mid_flight(
    env: Env, sched: Any, sched_service: Any, sessionmaker: Any, redis_client: Any, redis_prefix: str
) -> None:
    user = env.user()
    capability = f"flush-{uuid.uuid4().hex[:6]}"
    ids = [env.submit(user, {"type": "echo", "capabilities": [capability]})["id"] for _ in range(12)]
    agent = AgentSpec(f"agent-{capability}", user.id, (capability,), 12)
    await sched.agent_online(agent, lease_s=60)
    assert await sched_service.run_until_idle() == 12
    recorder = Recorder(sched, sessionmaker, consumer="flush-test")
    await recorder.drain()  # queued and assigned are recorded; what follows stays in Redis only

    for task_id in ids[:9]:
        assert (await sched.accept(task_id, 1, agent.agent_id)).outcome == "ok"
    async with sessionmaker() as session:
        service = TaskService(session, sched)
        for task_id in ids[:6]:
            assert (await service.record_result(task_id, 1, agent.agent_id, {"first": True})).ack

    await wipe_prefix(redis_client, redis_prefix)  # `running` and `done` events were never recorded
    assert (await Reconciler(sched, sessionmaker).run_once()).rebuilt == 6

    # The six unfinished tasks run again (attempt 2) on the rebuilt queues.
    await sched.agent_online(agent, lease_s=60)
    assert await sched_service.run_until_idle() == 6
    async with sessionmaker() as session:
        service = TaskService(session, sched)
        for task_id in ids[6:]:
            assert (await sched.accept(task_id, 2, agent.agent_id)).outcome == "ok"
            assert (await service.record_result(task_id, 2, agent.agent_id, {"second": True})).ack
    await recorder.drain()

    for n, task_id in enumerate(ids):
        body = env.client.get(f"/api/tasks/{task_id}", headers=user.headers).json()
        assert body["status"] == "done"
        assert body["result"] == ({"first": True} if n < 6 else {"second": True})
        statuses = [e["status"] for e in body["events"]]
        seqs = [e["seq"] for e in body["events"]]
        assert statuses[0] == "queued", (n, statuses)
        assert statuses[-1] == "done", (n, statuses)
        assert statuses.count("done") == 1
        assert seqs == sorted(set(seqs))
        if n < 6:  # lost with Redis: `running` (the documented window); kept: what the rows wrote
            assert statuses == ["queued", "assigned", "done"], statuses
        else:  # requeued by the rebuild (which emits no new `queued`), then a whole second attempt
            assert statuses == ["queued", "assigned", "assigned", "running", "done"], statuses
            assert [e["attempt"] for e in body["events"]][-3:] == [2, 2, 2]


async def test_the_rebuild_derives_a_final_status_the_database_missed(
    env: Env, sched: Any, sessionmaker: Any, redis_client: Any, redis_prefix: str
) -> None:
    user = env.user()
    task_id = env.submit(user, {"type": "echo", "capabilities": ["nobody-has-this"]})["id"]
    # A final status only the scheduler decided (say, the last attempt timed out), whose event was still
    # in Redis: the row says failed, the history never heard of it.
    now = dt.datetime.now(dt.UTC)
    async with sessionmaker() as session:
        await session.execute(
            update(Task).where(Task.id == task_id).values(status="failed", seq=7, attempt=3, finished_at=now)
        )
        await session.commit()
    await wipe_prefix(redis_client, redis_prefix)
    await Reconciler(sched, sessionmaker).run_once()
    events = await recorded(sessionmaker, task_id)
    assert [(e.seq, e.status) for e in events] == [(1, "queued"), (7, "failed")]
    assert events[-1].data == {"derived": True}
    assert events[-1].attempt == 3
    # A second rebuild adds nothing.
    await wipe_prefix(redis_client, redis_prefix)
    await Reconciler(sched, sessionmaker).run_once()
    assert len(await recorded(sessionmaker, task_id)) == 2


def _row(task_id: str, owner_id: str, status: str, entries: Any, at: dt.datetime) -> dict[str, Any]:
    """A `tasks` row at attempt 1, seq 4, created, updated and finished at `at`."""
    return {
        "id": task_id,
        "owner_id": owner_id,
        "type": "echo",
        "input": {},
        "priority": 5,
        "capabilities": [],
        "timeout_s": 60,
        "max_attempts": 1,
        "status": status,
        "attempt": 1,
        "seq": 4,
        "created_at": at,
        "updated_at": at,
        "finished_at": at,
        "history": entries,
    }


async def test_history_appends_and_merges_on_sqlite(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        now = dt.datetime.now(dt.UTC)
        row = _row(
            "t1", "u1", "running", [history.entry(1, "queued", attempt=0, agent_id=None, data=None, at=now)], now
        )
        row.update(seq=3, finished_at=None)
        async with maker() as session:
            await session.execute(insert(Task), [row])
            done = history.entry(4, "done", attempt=1, agent_id="a", data=None, at=now)
            params = {"b_id": "t1", "b_output": 1, "b_attempt": 1, "b_agent": "a", "b_now": now, "b_seq": 4}
            await apply_writes(await session.connection(), [("result", params | {"b_change": [done]})])
            await session.commit()
            task = await session.get(Task, "t1")
            assert task is not None
            events = await read_events(session, task, limit=10)
        assert [(e.seq, e.status, e.agent_id) for e in events] == [(1, "queued", None), (4, "done", "a")]
        again = history.entry(1, "queued", attempt=0, agent_id=None, data={"r": 1}, at=now)
        assert history.merge(task.history, [again])[0][4] == {"r": 1}  # the newer copy of a seq wins
    finally:
        await engine.dispose()


def _finished_rows(owner_id: str, now: dt.datetime) -> dict[str, dict[str, Any]]:
    """Finished rows whose history does or does not carry their status, by what the reconciler should see."""

    def row(task_id: str, status: str, entries: Any) -> dict[str, Any]:
        return _row(task_id, owner_id, status, entries, now)

    queued = history.entry(1, "queued", attempt=0, agent_id=None, data=None, at=now)
    done = history.entry(4, "done", attempt=1, agent_id="a", data=None, at=now)
    suffix = uuid.uuid4().hex[:8]
    return {
        f"complete-{suffix}": row(f"complete-{suffix}", "done", [queued, done]),
        f"lacking-{suffix}": row(f"lacking-{suffix}", "failed", [queued, done]),
        f"short-{suffix}": row(f"short-{suffix}", "failed", [queued, [5]]),  # an entry without a status
        f"odd-{suffix}": row(f"odd-{suffix}", "done", ["done", [1, "queued"]]),  # a stray scalar: no entry
    }


async def _ids_lacking_their_status(maker: Any, rows: dict[str, dict[str, Any]]) -> set[str]:
    from api.tasks.reconciler import _lacks_own_status

    async with maker() as session:
        await session.execute(insert(Task), list(rows.values()))
        await session.commit()
        lacks = _lacks_own_status(session.get_bind().dialect.name)
        found = await session.execute(select(Task.id).where(Task.id.in_(list(rows)), lacks))
        return set(found.scalars())


async def test_the_database_returns_only_finished_rows_lacking_their_status(env: Env, sessionmaker: Any) -> None:
    """The reconciler's filter runs in SQL (it used to read the whole window's rows into Python each round)."""
    rows = _finished_rows(env.user().id, dt.datetime.now(dt.UTC))
    lacking = await _ids_lacking_their_status(sessionmaker, rows)
    assert lacking == {i for i in rows if not i.startswith("complete-")}


async def test_the_filter_for_rows_lacking_their_status_on_sqlite(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        rows = _finished_rows("u1", dt.datetime.now(dt.UTC))
        lacking = await _ids_lacking_their_status(async_sessionmaker(engine, expire_on_commit=False), rows)
        assert lacking == {i for i in rows if not i.startswith("complete-")}
    finally:
        await engine.dispose()
