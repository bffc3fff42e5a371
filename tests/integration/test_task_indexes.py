"""`tasks` on PostgreSQL: the migrations' partial indexes are the models', and the one-statement outcome UPDATE
finds its rows through the primary key on a young table whose statistics have not caught up."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import postgresql

import api.db.models  # noqa: F401 - registers every table
from api.db.base import Base
from api.tasks.outcome_rows import _BULK, Kind
from taskyard.migrate import upgrade
from tests.conftest import private_postgres_database

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.postgres


def _plain(url: str) -> str:
    """A psycopg connection string for an SQLAlchemy URL (`postgresql+psycopg://...`)."""
    return urlsplit(url)._replace(scheme="postgresql").geturl()


@pytest.fixture
def fresh_database(postgres_admin_url: str) -> Iterator[str]:
    """An empty database private to the test (async SQLAlchemy URL)."""
    with private_postgres_database(postgres_admin_url, "taskyard_test_ix") as url:
        yield url


def _task_indexes(url: str) -> dict[str, str]:
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        rows = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks'").fetchall()
    return {name: definition for name, definition in rows}


def test_migrated_task_indexes_are_the_models(fresh_database: str, postgres_admin_url: str) -> None:
    """Alembic's drift check compares index names and columns, not their WHERE: the migrated `tasks` indexes,
    predicates included, must be what the models create."""
    upgrade(fresh_database, "head")
    migrated = _task_indexes(fresh_database)

    with private_postgres_database(postgres_admin_url, "taskyard_test_ixm") as models_url:
        engine = create_engine(models_url)
        try:
            Base.metadata.create_all(engine)
        finally:
            engine.dispose()
        modelled = _task_indexes(models_url)

    assert migrated == modelled
    # The indexes a finished task leaves: only the rows where their column is set (or not `done`).
    for index in ("uq_tasks_owner_id_idempotency_key", "ix_tasks_status", "ix_tasks_agent_id", "ix_tasks_finished_at"):
        assert " WHERE " in migrated[index], migrated[index]
    assert migrated["uq_tasks_owner_id_idempotency_key"].startswith("CREATE UNIQUE INDEX")


def _seed(conn: psycopg.Connection[Any], count: int) -> list[str]:
    conn.execute(
        "INSERT INTO users (id, email, name, password_hash, role, is_active, token_version, created_at, updated_at) "
        "VALUES ('u1', 'u1@example.test', 'u1', 'x', 'user', true, 0, now(), now())"
    )
    conn.execute(
        "INSERT INTO tasks (id, owner_id, type, input, priority, capabilities, timeout_s, max_attempts, status, "
        "attempt, seq, created_at, updated_at, history) "
        "SELECT lpad(g::text, 12, '0'), 'u1', 'echo', '{}', 0, '[]', 60, 3, 'assigned', 1, 2, now(), now(), '[]' "
        "FROM generate_series(1, %s) AS g",
        (count,),
    )
    return [f"{n:012d}" for n in (7, count // 2, count - 3)]


def _row(kind: Kind, task_id: str) -> dict[str, Any]:
    now = "2026-11-29T00:00:00+00:00"
    change = [[3, "done" if kind == "result" else "failed", 1, "a1", None, 0]]
    return {
        "b_id": task_id,
        "b_agent": "a1",
        "b_status": "scheduled",
        "b_attempt": 1,
        "b_seq": 3,
        "b_now": now,
        "b_started": now,
        "b_output": {"ok": True},
        "b_error": {"error": "boom"},
        "b_change": change,
    }


@pytest.mark.parametrize("kind", ["result", "partial", "failed", "retry"])
def test_outcome_update_reads_its_rows_by_primary_key_on_a_young_table(fresh_database: str, kind: Kind) -> None:
    """Thousands of rows, never analyzed: the UPDATE still looks its rows up in `pk_tasks` (it used to scan the
    whole table), and it changes exactly the rows it names."""
    upgrade(fresh_database, "head")
    statement = _BULK[kind].compile(dialect=postgresql.psycopg.dialect())  # type: ignore[attr-defined]
    sql, fixed = str(statement), dict(statement.params)
    with psycopg.connect(_plain(fresh_database), autocommit=True) as conn:
        ids = _seed(conn, 5000)
        rows = json.dumps([_row(kind, task_id) for task_id in ids])
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, fixed | {"b_rows": rows}).fetchall())
        assert "Seq Scan on tasks" not in plan, plan
        assert "pk_tasks" in plan, plan

        changed = conn.execute(sql, fixed | {"b_rows": rows}).rowcount
        assert changed == len(ids)
        moved = conn.execute("SELECT id FROM tasks WHERE updated_at = '2026-11-29T00:00:00+00:00' ORDER BY id")
        assert [r[0] for r in moved.fetchall()] == ids
