"""The single-submit hot path: one transaction with one INSERT, no rollback, no auth query.

Counted with SQLAlchemy event listeners on the app's own engine (counts, never timings).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event

from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    env_fixture,
    make_env_fixture,
)

pytestmark = pytest.mark.redis


@dataclass
class Tally:
    statements: list[str] = field(default_factory=list)
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0

    def clear(self) -> None:
        self.statements.clear()
        self.begins = self.commits = self.rollbacks = 0


@pytest.fixture
def tally(env: Env) -> Iterator[Tally]:
    engine = env.client.app.state.db_engine.sync_engine
    seen = Tally()

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.statements.append(" ".join(statement.split()))

    def on_begin(_conn: Any) -> None:
        seen.begins += 1

    def on_commit(_conn: Any) -> None:
        seen.commits += 1

    def on_rollback(_conn: Any) -> None:
        seen.rollbacks += 1

    listeners = [
        ("before_cursor_execute", on_statement),
        ("begin", on_begin),
        ("commit", on_commit),
        ("rollback", on_rollback),
    ]
    for name, fn in listeners:
        event.listen(engine, name, fn)
    yield seen
    for name, fn in listeners:
        event.remove(engine, name, fn)


def test_one_post_is_one_transaction_with_one_insert(env: Env, tally: Tally) -> None:
    user = env.user()
    env.submit(user)  # the token's first use reads the user row; later ones are served by the cache
    tally.clear()

    for n in range(5):
        task = env.submit(user, {"type": "echo", "input": {"n": n}})
        assert [s.split(" (")[0] for s in tally.statements] == ["INSERT INTO tasks"], tally.statements
        assert (tally.begins, tally.commits, tally.rollbacks) == (1, 1, 0)
        tally.clear()
        # Durable before the answer: another connection sees the row and its first history entry.
        [(status, history)] = env.rows("SELECT status, history FROM tasks WHERE id = :i", i=task["id"])
        assert status == "queued"
        assert "queued" in str(history)


def test_an_idempotent_submit_reads_once_and_writes_once(env: Env, tally: Tally) -> None:
    user = env.user()
    env.submit(user)
    tally.clear()
    first = env.submit(user, {"type": "echo", "input": {"n": 1}}, **{"Idempotency-Key": "k-1"})
    assert len(tally.statements) == 2  # the key lookup and the INSERT, in the same transaction
    assert (tally.begins, tally.commits, tally.rollbacks) == (1, 1, 0)
    tally.clear()
    replay = env.client.post(
        "/api/tasks", json={"type": "echo", "input": {"n": 1}}, headers={**user.headers, "Idempotency-Key": "k-1"}
    )
    assert replay.status_code == 200
    assert replay.json()["id"] == first["id"]
    assert len(tally.statements) == 1


def test_batch_submit_is_one_transaction_and_one_row_per_task(env: Env, tally: Tally) -> None:
    user = env.user()
    env.submit(user)
    tally.clear()
    items = [{"type": "echo", "input": {"n": n}} for n in range(20)]
    r = env.client.post("/api/tasks/batch", json={"tasks": items}, headers=user.headers)
    assert r.status_code == 201, r.text
    assert [s.split(" (")[0] for s in tally.statements] == ["INSERT INTO tasks"]
    assert (tally.begins, tally.commits, tally.rollbacks) == (1, 1, 0)
    assert len(r.json()["items"]) == 20
    mine = "SELECT count(*) FROM {} WHERE {} IN (SELECT id FROM tasks WHERE owner_id = :o)"
    assert env.rows(mine.format("tasks", "id"), o=user.id) == [(21,)]
    assert env.rows(mine.format("task_events", "task_id"), o=user.id) == [(0,)]


def test_submit_and_cancel_keep_their_history_on_sqlite(make_env: Any, tmp_path: Any) -> None:
    """The dev database: the autocommit INSERT and the JSON history appends work on SQLite too."""
    from taskyard.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"
    upgrade(url)
    env: Env = make_env(DATABASE_URL=url)
    user = env.user()
    task = env.submit(user, {"type": "echo", "capabilities": ["nobody-has-this"]}, **{"Idempotency-Key": "sq-1"})
    again = env.client.post(
        "/api/tasks",
        json={"type": "echo", "capabilities": ["nobody-has-this"]},
        headers={**user.headers, "Idempotency-Key": "sq-1"},
    )
    assert again.status_code == 200
    assert again.json()["id"] == task["id"]
    canceled = env.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert canceled.status_code == 200, canceled.text
    body = canceled.json()
    assert body["status"] == "canceled"
    assert [(e["seq"], e["status"]) for e in body["events"]] == [(1, "queued"), (2, "canceled")]
    assert body["events"][1]["data"] == {"reason": "canceled"}
