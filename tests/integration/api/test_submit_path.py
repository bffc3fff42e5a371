"""The single-submit hot path: one transaction with one INSERT, no rollback, no auth query.

Counted with SQLAlchemy event listeners on the app's own engine, and (for the keyless single submit,
which sends its INSERT straight on a pooled driver connection) by recording what the app's
`DirectExecutor` sends (counts, never timings).
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


@pytest.fixture
def direct_sent(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the app's `DirectExecutor` sends (PostgreSQL only; SQLite has none)."""
    executor = env.client.app.state.db_direct
    if executor is None:
        pytest.skip("the direct INSERT is PostgreSQL only")
    sent: list[str] = []
    execute = executor.execute

    async def recording(sql: str, params: Any) -> None:
        sent.append(" ".join(sql.split()))
        await execute(sql, params)

    monkeypatch.setattr(executor, "execute", recording)
    return sent


def test_one_post_is_one_insert_on_a_driver_connection(env: Env, tally: Tally, direct_sent: list[str]) -> None:
    user = env.user()
    env.submit(user)  # the token's first use reads the user row; later ones are served by the cache
    tally.clear()
    direct_sent.clear()

    for n in range(5):
        task = env.submit(user, {"type": "echo", "input": {"n": n}})
        assert [s.split(" (")[0] for s in direct_sent] == ["INSERT INTO tasks"], direct_sent
        # Nothing through the session: no statement, no BEGIN, COMMIT or ROLLBACK around it.
        assert tally.statements == []
        assert (tally.begins, tally.commits, tally.rollbacks) == (0, 0, 0)
        tally.clear()
        direct_sent.clear()
        # Durable before the answer: another connection sees the row and its first history entry.
        [(status, history)] = env.rows("SELECT status, history FROM tasks WHERE id = :i", i=task["id"])
        assert status == "queued"
        assert "queued" in str(history)


def test_the_direct_insert_writes_the_row_the_session_path_writes(env: Env, direct_sent: list[str]) -> None:
    user = env.user()
    body = {
        "type": "echo",
        "input": {"text": "h\u00e9llo", "nested": [1, 2.5, None, {"k": True}]},
        "capabilities": ["b", "a", "b"],
        "priority": 3,
        "maxAttempts": 2,
        "runAt": "2099-01-01T00:00:00+02:00",
    }
    direct = env.submit(user, body)
    assert len(direct_sent) == 1
    through_session = env.submit(user, body, **{"Idempotency-Key": "via-session"})
    assert len(direct_sent) == 1  # a keyed submit keeps the session path
    columns = "type, input, priority, agent_id, capabilities, timeout_s, max_attempts, run_at, status, attempt, seq"
    sql = f"SELECT {columns}, history FROM tasks WHERE id = :i"
    [(*a, history_a)] = env.rows(sql, i=direct["id"])
    [(*b, history_b)] = env.rows(sql, i=through_session["id"])
    assert a == b
    assert [e[:5] for e in history_a] == [e[:5] for e in history_b] == [[1, "scheduled", 0, None, None]]
    assert direct["status"] == "scheduled"
    assert direct["input"] == body["input"]


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
    assert env.client.app.state.db_direct is None
    keyless = env.submit(user, {"type": "echo", "input": {"n": 2}})  # through the session on SQLite
    read = env.client.get(f"/api/tasks/{keyless['id']}", headers=user.headers)
    assert read.status_code == 200, read.text
    assert read.json()["input"] == {"n": 2}
