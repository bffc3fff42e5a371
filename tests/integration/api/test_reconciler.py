"""The reconciler: rows committed without an enqueue come back, and an emptied Redis is rebuilt."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from api.db.base import UTCDateTime
from api.db.models.tasks import Task
from api.tasks.history import read_events
from api.tasks.reconciler import Reconciler
from api.tasks.recorder import Recorder
from api.tasks.service import TaskService
from scheduler.scripts import PROGRESS_MARK_EVERY
from scheduler.types import AgentSpec
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


def insert_row_behind_redis(env: Env, owner_id: str, *, age_s: float = 5) -> str:
    """What a crash between the commit and the enqueue leaves: a committed row Redis never saw."""
    task_id = str(uuid.uuid4())
    created = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    with env.db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tasks (id, owner_id, type, input, priority, capabilities, timeout_s, max_attempts,"
                " status, attempt, seq, created_at, updated_at) VALUES (:id, :o, 'echo', '{\"n\": 1}', 5, '[]',"
                " 60, 3, 'queued', 0, 1, :at, :at)"
                # A typed parameter: Python 3.12's sqlite3 deprecates its own datetime adapter.
            ).bindparams(sa.bindparam("at", type_=UTCDateTime())),
            {"id": task_id, "o": owner_id, "at": created},
        )
        conn.execute(
            sa.text(
                "INSERT INTO task_events (task_id, seq, type, status, attempt, at)"
                " VALUES (:id, 1, 'task/status', 'queued', 0, :at)"
            ).bindparams(sa.bindparam("at", type_=UTCDateTime())),
            {"id": task_id, "at": created},
        )
    return task_id


async def wait_until(predicate: Any, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_row_committed_without_enqueue_is_enqueued_by_the_running_app(make_env, sched) -> None:
    await sched.mark_epoch()  # Redis is not "fresh": only the periodic job can bring the row back
    env = make_env(TASKYARD_API_RECONCILE_INTERVAL_S=0.5)
    user = env.user()
    task_id = insert_row_behind_redis(env, user.id)

    async def known() -> bool:
        return task_id in await sched.known_task_ids([task_id])

    await wait_until(known)


async def test_reenqueue_leaves_young_and_known_rows_alone(env: Env, sched, sessionmaker) -> None:
    user = env.user()
    young = insert_row_behind_redis(env, user.id, age_s=0)
    old = insert_row_behind_redis(env, user.id, age_s=5)
    known = env.submit(user)["id"]
    reconciler = Reconciler(sched, sessionmaker, grace_s=2.0)
    assert await reconciler.reenqueue_recent() >= 1
    assert await sched.known_task_ids([young, old, known]) == {old, known}
    # Idempotent: a second round finds nothing of ours to do.
    await reconciler.reenqueue_recent()
    assert await sched.known_task_ids([young]) == set()


def spy_on_known_task_ids(sched: Any, monkeypatch: Any) -> list[str]:
    """Every task id the reconciler asks Redis about, from now on."""
    asked: list[str] = []
    real = sched.known_task_ids

    async def spy(ids: Any) -> set[str]:
        wanted = list(ids)
        asked.extend(wanted)
        return await real(wanted)

    monkeypatch.setattr(sched, "known_task_ids", spy)
    return asked


async def test_a_row_redis_holds_is_asked_about_once(env: Env, sched, sessionmaker, monkeypatch) -> None:
    """A backlog of waiting rows costs one EXISTS each, not one per reconcile round."""
    user = env.user()
    waiting = [insert_row_behind_redis(env, user.id) for _ in range(3)]
    reconciler = Reconciler(sched, sessionmaker, grace_s=2.0)
    assert await reconciler.reenqueue_recent() == 3  # Redis did not know them: enqueued
    asked = spy_on_known_task_ids(sched, monkeypatch)
    assert await reconciler.reenqueue_recent() == 0
    first_round = set(asked)
    assert set(waiting) <= first_round
    asked.clear()
    assert await reconciler.reenqueue_recent() == 0
    assert not set(waiting) & set(asked)


async def wipe_prefix(redis_client: Any, prefix: str) -> None:
    keys = [k async for k in redis_client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await redis_client.unlink(*keys)


async def test_emptied_redis_is_rebuilt_from_the_database(
    env: Env, sched, sched_service, sessionmaker, redis_client, redis_prefix
) -> None:
    user = env.user()
    queued = env.submit(user, {"type": "echo", "capabilities": ["nobody-has-this"]})["id"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    scheduled = env.submit(user, {"type": "echo", "runAt": later})["id"]
    done = env.submit(user, {"type": "echo", "capabilities": ["special"]})["id"]
    in_flight = env.submit(user, {"type": "echo", "capabilities": ["special"]})["id"]

    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, ("special",), 1), lease_s=30)
    # One slot: the first "special" task runs and finishes, then the second one is left running.
    await sched_service.run_until_idle()
    async with sessionmaker() as session:
        service = TaskService(session, sched)
        await sched.accept(done, 1, agent)
        assert (await service.record_result(done, 1, agent, {"ok": True})).ack
    await sched_service.run_until_idle()
    await sched.accept(in_flight, 1, agent)
    await Recorder(sched, sessionmaker, consumer="test").drain()
    rows = dict(env.rows("SELECT id, status FROM tasks WHERE id IN (:a, :b)", a=done, b=in_flight))
    assert rows == {done: "done", in_flight: "running"}

    await wipe_prefix(redis_client, redis_prefix)
    assert not await sched.epoch_present()

    result = await Reconciler(sched, sessionmaker).run_once()
    assert result.rebuilt is not None
    assert result.rebuilt >= 3
    assert await sched.epoch_present()
    assert await sched.known_task_ids([queued, scheduled, in_flight, done]) == {queued, scheduled, in_flight}
    # A second round is a no-op: the epoch is back.
    assert (await Reconciler(sched, sessionmaker).run_once()).rebuilt is None

    # The in-flight task was requeued with its attempt kept: the next dispatch is attempt 2, and
    # the old attempt's result is refused.
    await sched.agent_online(AgentSpec(agent, user.id, ("special",), 1), lease_s=30)
    await sched_service.run_until_idle()
    async with sessionmaker() as session:
        service = TaskService(session, sched)
        stale = await service.record_result(in_flight, 1, agent, {"late": True})
        assert stale.ack is False
        assert (await service.record_result(in_flight, 2, agent, {"ok": 2})).ack is True
    await Recorder(sched, sessionmaker, consumer="test").drain()
    [(status, attempt, result_json)] = env.rows("SELECT status, attempt, result FROM tasks WHERE id = :i", i=in_flight)
    assert (status, attempt) == ("done", 2)
    assert "late" not in str(result_json)
    # Event numbering continued after the rebuild: seqs stay unique and increasing.
    async with sessionmaker() as session:
        row = await session.get(Task, in_flight)
        assert row is not None
        recorded = await read_events(session, row, limit=1000)
    seqs = [e.seq for e in recorded]
    assert seqs == sorted(set(seqs))
    statuses = [e.status for e in recorded]
    assert statuses[0] == "queued"
    assert statuses[-1] == "done"


async def test_a_rebuild_numbers_on_above_the_progress_watchers_saw(
    env: Env, sched, sched_service, sessionmaker, redis_client, redis_prefix
) -> None:
    """Most progress never reaches the row's seq (the recorder sees every PROGRESS_MARK_EVERY-th): after a
    rebuild the task's next event is still numbered above every seq handed out before it."""
    user = env.user()
    capability = "p-" + uuid.uuid4().hex[:6]
    task_id = env.submit(user, {"type": "echo", "capabilities": [capability]})["id"]
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, (capability,), 1), lease_s=30)
    await sched_service.run_until_idle()
    assert (await sched.accept(task_id, 1, agent)).outcome == "ok"
    for i in range(50):
        body = b'{"taskId":"%s","attempt":1,"data":{"i":%d}}' % (task_id.encode(), i)
        assert (await sched.progress(task_id, 1, agent, body)).outcome == "ok"
    seen = max(e.seq for e in await sched.history(task_id))
    assert seen == 53
    await Recorder(sched, sessionmaker, consumer="test").drain()
    [(row_seq,)] = env.rows("SELECT seq FROM tasks WHERE id = :i", i=task_id)
    assert row_seq < seen  # the row knows the statuses only

    await wipe_prefix(redis_client, redis_prefix)
    assert (await Reconciler(sched, sessionmaker).run_once()).rebuilt is not None
    await sched.agent_online(AgentSpec(agent, user.id, (capability,), 1), lease_s=30)
    await sched_service.run_until_idle()
    [assigned] = [e for e in await sched.history(task_id) if e.type == "task/status"]
    assert assigned.status == "assigned"
    assert assigned.seq == row_seq + PROGRESS_MARK_EVERY + 1
    assert assigned.seq > seen


class CancelBecomesError:
    """A scheduler whose call turns a cancellation into an ordinary error, as DB drivers can."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def epoch_present(self) -> bool:
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("connection closed during the query") from None
        return True


async def test_stop_ends_the_loop_even_when_the_cancellation_is_swallowed(sessionmaker) -> None:
    fake = CancelBecomesError()
    reconciler = Reconciler(fake, sessionmaker, interval_s=0.05)  # type: ignore[arg-type]
    reconciler.start()
    await asyncio.wait_for(fake.entered.wait(), timeout=5)
    await asyncio.wait_for(reconciler.stop(), timeout=5)


async def test_a_result_whose_commit_was_lost_is_filled_from_the_output_redis_kept(
    env: Env, sched, sched_service, sessionmaker
) -> None:
    """The API replica applied the result in Redis and died before its commit; the agent never resent."""
    user = env.user()
    task_id = env.submit(user, {"type": "echo", "capabilities": ["special"]})["id"]
    agent = "agent-" + uuid.uuid4().hex[:8]
    await sched.agent_online(AgentSpec(agent, user.id, ("special",), 1), lease_s=30)
    await sched_service.run_until_idle()
    await sched.accept(task_id, 1, agent)
    assert (await sched.complete(task_id, 1, agent, b'{"answer":42}')).status == "done"  # no commit follows
    await Recorder(sched, sessionmaker, consumer="test").drain()
    [(status, result_json)] = env.rows("SELECT status, result FROM tasks WHERE id = :i", i=task_id)
    assert (status, result_json) == ("done", None)

    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    reconciler = Reconciler(sched, sessionmaker, clock=lambda: later)
    assert await reconciler.repair_results() == 1
    task = env.client.get(f"/api/tasks/{task_id}", headers=user.headers).json()
    assert (task["status"], task["result"], task["attempt"], task["agentId"]) == ("done", {"answer": 42}, 1, agent)
    assert await reconciler.repair_results() == 0  # filled once; a later resend is answered as a duplicate


async def test_known_task_ids_tells_the_held_from_the_missing(env: Env, sched) -> None:
    """One multi-key EXISTS answers a chunk Redis holds whole; a chunk with some missing is asked key by key."""
    user = env.user()
    held = [env.submit(user)["id"] for _ in range(3)]
    missing = insert_row_behind_redis(env, user.id)
    assert await sched.known_task_ids(held) == set(held)
    assert await sched.known_task_ids([*held, held[0]]) == set(held)
    assert await sched.known_task_ids([held[1], missing, held[2]]) == {held[1], held[2]}
    assert await sched.known_task_ids([missing, missing]) == set()
