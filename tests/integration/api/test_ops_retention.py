"""Retention purges (real PostgreSQL/SQLite)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from api.db.base import utcnow
from api.jobs.retention import purge
from api.settings import OpsSettings
from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    env_fixture,
    make_env_fixture,
    sessionmaker_fixture,
)

pytestmark = pytest.mark.redis

LONG_AGO = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)


def _finish(env: Env, task_id: str, status: str, finished_at: dt.datetime | None) -> None:
    with env.db.begin() as conn:
        conn.execute(
            sa.text("UPDATE tasks SET status = :s, finished_at = :f WHERE id = :id"),
            {"s": status, "f": finished_at, "id": task_id},
        )


def _add_events(env: Env, task_id: str, n: int) -> None:
    with env.db.begin() as conn:
        for seq in range(100, 100 + n):
            conn.execute(
                sa.text(
                    "INSERT INTO task_events (task_id, seq, type, status, attempt, at)"
                    " VALUES (:t, :s, 'progress', NULL, 1, :at)"
                ),
                {"t": task_id, "s": seq, "at": LONG_AGO},
            )


def _exists(env: Env, task_id: str) -> bool:
    return bool(env.rows("SELECT 1 FROM tasks WHERE id = :id", id=task_id))


def _events(env: Env, task_id: str) -> int:
    return int(env.rows("SELECT count(*) FROM task_events WHERE task_id = :id", id=task_id)[0][0])


async def test_purge_deletes_old_finished_tasks_in_batches_and_keeps_the_rest(env: Env, sessionmaker: Any) -> None:
    user = env.user()
    old = [env.submit(user)["id"] for _ in range(7)]
    for i, task_id in enumerate(old):
        _finish(env, task_id, ("done", "failed", "canceled")[i % 3], LONG_AGO)
        _add_events(env, task_id, 2)
    recent = env.submit(user)["id"]
    _finish(env, recent, "done", utcnow())
    _add_events(env, recent, 2)
    # Active rows are never purged, however old their finish time looks.
    active = env.submit(user)["id"]
    _finish(env, active, "running", LONG_AGO)
    recent_events = _events(env, recent)

    settings = OpsSettings(retention_batch_size=3, retention_events_days=0)
    report = await purge(sessionmaker, settings, now=utcnow())

    assert report.tasks >= 7
    assert report.batches >= 3  # 7 rows at 3 per batch
    assert not any(_exists(env, t) for t in old)
    assert sum(_events(env, t) for t in old) == 0
    assert _exists(env, recent)
    assert _events(env, recent) == recent_events
    assert _exists(env, active)


async def test_events_age_out_before_their_task(env: Env, sessionmaker: Any) -> None:
    user = env.user()
    task_id = env.submit(user)["id"]
    _finish(env, task_id, "done", utcnow() - dt.timedelta(days=10))
    _add_events(env, task_id, 5)

    settings = OpsSettings(retention_tasks_days=30, retention_events_days=7, retention_batch_size=2)
    report = await purge(sessionmaker, settings, now=utcnow())
    assert report.events >= 5
    assert _exists(env, task_id)
    assert _events(env, task_id) == 0


async def test_max_batches_bounds_one_run(env: Env, sessionmaker: Any) -> None:
    user = env.user()
    ids = [env.submit(user)["id"] for _ in range(5)]
    for task_id in ids:
        _finish(env, task_id, "done", LONG_AGO)
    settings = OpsSettings(retention_batch_size=2, retention_max_batches=1, retention_events_days=0)
    first = await purge(sessionmaker, settings, now=utcnow())
    assert first.tasks == 2
    assert sum(_exists(env, t) for t in ids) == 3
    while (await purge(sessionmaker, settings, now=utcnow())).tasks:
        pass
    assert not any(_exists(env, t) for t in ids)


async def test_expired_tokens_and_old_audit_rows_go_with_a_controlled_clock(env: Env, sessionmaker: Any) -> None:
    user = env.user()  # registering and logging in wrote audit rows and a refresh token now
    audit_before = int(env.rows("SELECT count(*) FROM audit_log WHERE actor_id = :u", u=user.id)[0][0])
    tokens_before = int(env.rows("SELECT count(*) FROM refresh_tokens WHERE user_id = :u", u=user.id)[0][0])
    assert audit_before > 0
    assert tokens_before > 0

    settings = OpsSettings(retention_audit_days=180, retention_tokens_days=1)
    # Today nothing of this user's is old enough.
    await purge(sessionmaker, settings, now=utcnow())
    assert int(env.rows("SELECT count(*) FROM refresh_tokens WHERE user_id = :u", u=user.id)[0][0]) == tokens_before
    # A year later (past the 30-day token family and the 180-day audit age) both are gone.
    report = await purge(sessionmaker, settings, now=utcnow() + dt.timedelta(days=365))
    assert report.refresh_tokens >= tokens_before
    assert report.audit >= audit_before
    assert int(env.rows("SELECT count(*) FROM refresh_tokens WHERE user_id = :u", u=user.id)[0][0]) == 0
    assert int(env.rows("SELECT count(*) FROM audit_log WHERE actor_id = :u", u=user.id)[0][0]) == 0


async def test_purge_runs_while_tasks_keep_flowing(env: Env, sessionmaker: Any) -> None:
    user = env.user()
    old = [env.submit(user)["id"] for _ in range(40)]
    for task_id in old:
        _finish(env, task_id, "done", LONG_AGO)
    submitted: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def submit_loop() -> None:
        try:
            while not stop.is_set() and len(submitted) < 200:
                submitted.append(env.submit(user)["id"])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=submit_loop)
    thread.start()
    try:
        settings = OpsSettings(retention_batch_size=5, retention_events_days=0)
        report = await purge(sessionmaker, settings, now=utcnow())
    finally:
        await asyncio.sleep(0.2)  # let some submissions land after the last batch too
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    assert not errors, errors
    assert report.tasks >= 40
    assert report.batches >= 8
    assert not any(_exists(env, t) for t in old)
    assert submitted
    assert all(_exists(env, t) for t in submitted)
