"""Shared fixtures and helpers for the agents/tasks/recorder/reconciler/metrics tests (no tests here).

Test modules import the `*_fixture` functions (the fixtures keep their short names), which keeps
them local to those modules instead of registering a plugin for the whole run.

The app runs in the TestClient's own thread and loop; tests that drive the scheduler or the recorder
build their own clients on the test's loop against the same Redis prefix and database.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio
import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.app import create_app
from scheduler.client import SchedulerClient
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings

CHEAP_ARGON2 = {
    "TASKYARD_API_ARGON2_TIME_COST": 1,
    "TASKYARD_API_ARGON2_MEMORY_COST_KIB": 8,
    "TASKYARD_API_ARGON2_PARALLELISM": 1,
}
# Background loops off by default: tests drive the recorder and reconciler themselves.
QUIET = {"TASKYARD_API_RECONCILE_INTERVAL_S": 0, "TASKYARD_API_RECORDER_ENABLED": 0}
PASSWORD = "correct horse battery"
TERMINAL = ("done", "failed", "canceled")


def sync_url(async_url: str) -> str:
    return async_url.replace("+aiosqlite", "")


@dataclass
class Caller:
    """A registered user with a bearer token."""

    id: str
    email: str
    token: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Env:
    """One app (TestClient) plus direct database access and user factories."""

    client: TestClient[Any]
    db: sa.Engine
    prefix: str
    redis_url: str
    database_url: str
    user_ids: list[str] = field(default_factory=list)

    def user(self, *, admin: bool = False) -> Caller:
        email = f"u-{secrets.token_hex(5)}@example.com"
        r = self.client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "T"})
        assert r.status_code == 201, r.text
        user_id = r.json()["userId"]
        self.user_ids.append(user_id)
        if admin:
            with self.db.begin() as conn:
                conn.execute(sa.text("UPDATE users SET role = 'admin' WHERE id = :id"), {"id": user_id})
        r = self.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return Caller(user_id, email, r.json()["accessToken"], "admin" if admin else "user")

    def submit(self, caller: Caller, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        r = self.client.post(
            "/api/tasks", json=body or {"type": "echo", "input": {"n": 1}}, headers={**caller.headers, **headers}
        )
        assert r.status_code == 201, r.text
        task: dict[str, Any] = r.json()
        return task

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.db.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())

    def count_tasks(self, owner_id: str) -> int:
        return int(self.rows("SELECT count(*) FROM tasks WHERE owner_id = :o", o=owner_id)[0][0])


def assert_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert isinstance(body["code"], int)
    assert body["requestId"] == response.headers["x-request-id"]
    return body


@pytest.fixture(name="make_env")
def make_env_fixture(
    make_settings: Callable[..., Any], redis_url: str, redis_prefix: str, migrated_database_url: str
) -> Iterator[Callable[..., Env]]:
    """`make_env(**env_overrides)` -> an `Env` around a fresh app (background loops off unless overridden)."""
    envs: list[Env] = []
    engine = sa.create_engine(sync_url(migrated_database_url))

    def build(**overrides: object) -> Env:
        client: TestClient[Any] = TestClient(app=create_app(make_settings(**{**CHEAP_ARGON2, **QUIET, **overrides})))
        client.__enter__()
        env = Env(client, engine, redis_prefix, redis_url, migrated_database_url)
        envs.append(env)
        return env

    yield build
    for env in envs:
        env.client.__exit__(None, None, None)
    # The database is shared by the whole run: leave no active task of ours behind, so another
    # test's rebuild (which enqueues every active row) never picks ours up.
    ids = [u for env in envs for u in env.user_ids]
    if ids:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE tasks SET status = 'canceled' WHERE status NOT IN ('done', 'failed', 'canceled')"
                    " AND owner_id IN :ids"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": ids},
            )
    engine.dispose()


@pytest.fixture(name="env")
def env_fixture(make_env: Callable[..., Env]) -> Env:
    return make_env()


@pytest.fixture(name="sched_settings")
def sched_settings_fixture(redis_prefix: str) -> SchedulerSettings:
    return SchedulerSettings(prefix=redis_prefix, sweep_interval_s=0.05, assign_timeout_s=30, retry_base_s=0.2)


@pytest.fixture(name="sched")
def sched_fixture(redis_client: redis.asyncio.Redis, sched_settings: SchedulerSettings) -> SchedulerClient:
    """A scheduler client on the test's loop, same prefix as the app."""
    return SchedulerClient(redis_client, prefix=sched_settings.prefix, settings=sched_settings)


@pytest.fixture(name="sched_service")
def sched_service_fixture(redis_client: redis.asyncio.Redis, sched_settings: SchedulerSettings) -> SchedulerService:
    return SchedulerService(redis_client, sched_settings)


@pytest.fixture(name="sessionmaker")
async def sessionmaker_fixture(migrated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """An async session factory on the test's loop."""
    engine = create_async_engine(migrated_database_url)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()
