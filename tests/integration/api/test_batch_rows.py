"""A batch's rows (plain rows, one JSON INSERT on PostgreSQL) are what single submits of the same items make."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.integration.api.test_tasks_support import (  # noqa: F401 - fixtures, used by name
    Env,
    assert_error,
    env_fixture,
    make_env_fixture,
    sched_fixture,
    sched_settings_fixture,
)

pytestmark = pytest.mark.redis

_LATER = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
ITEMS: list[dict[str, Any]] = [
    {"type": "echo", "input": {"text": "hi", "nested": [1, 2.5, None, {"k": "ü"}]}},
    {"type": "echo", "input": None},
    {"type": "echo", "input": "a string", "priority": 9, "timeoutSeconds": 7, "maxAttempts": 1},
    {"type": "llm.chat", "capabilities": ["llm", "gpu", "llm"]},
    {"type": "echo", "runAt": _LATER},
    {"type": "echo", "input": {"n": 1}, "idempotencyKey": "batch-rows-key"},
]
_ROW = (
    "SELECT type, input, priority, agent_id, capabilities, timeout_s, max_attempts, run_at, idempotency_key, "
    "request_hash IS NOT NULL, status, attempt, seq, created_at = updated_at, history FROM tasks WHERE id = :id"
)
_VARIES = {"id", "createdAt", "updatedAt", "idempotencyKey"}


def _row(env: Env, task_id: str) -> tuple[Any, ...]:
    (row,) = env.rows(_ROW, id=task_id)
    values = list(row)
    if env.database_url.startswith("sqlite"):  # JSON columns come back as text there
        values[1], values[4], values[-1] = (json.loads(values[i]) for i in (1, 4, -1))
    values[-1] = [e[:5] for e in values[-1]]  # not the clock
    values[8] = values[8] is not None
    return tuple(values)


async def test_a_batch_writes_enqueues_and_answers_what_single_submits_do(env: Env, sched) -> None:
    user = env.user()
    r = env.client.post("/api/tasks/batch", json={"tasks": ITEMS}, headers=user.headers)
    assert r.status_code == 201, r.text
    batch = r.json()["items"]
    singles = [env.submit(user, {k: v for k, v in item.items() if k != "idempotencyKey"}) for item in ITEMS]
    for item, made, single in zip(ITEMS, batch, singles, strict=True):
        assert {k: v for k, v in made.items() if k not in _VARIES} == {
            k: v for k, v in single.items() if k not in _VARIES
        }, item
        got = env.client.get(f"/api/tasks/{made['id']}", headers=user.headers).json()
        assert {k: v for k, v in got.items() if k != "events"} == made
        assert [(e["seq"], e["status"]) for e in got["events"]] == [(1, made["status"])]
        keyed = "idempotencyKey" in item
        row, single_row = _row(env, made["id"]), _row(env, single["id"])
        assert row[:8] == single_row[:8], item
        assert row[10:] == single_row[10:], item
        assert row[8:10] == (keyed, keyed)  # the request hash only where a key can replay
    assert batch[1]["input"] is None
    assert batch[3]["capabilities"] == ["gpu", "llm"]
    assert [t["status"] for t in batch] == ["queued"] * 4 + ["scheduled", "queued"]
    assert await sched.known_task_ids([t["id"] for t in batch]) == {t["id"] for t in batch}

    # The key replays the same task; the same key asking something else is refused, and nothing is written.
    again = env.client.post("/api/tasks/batch", json={"tasks": [ITEMS[-1]]}, headers=user.headers)
    assert again.status_code == 200, again.text
    assert again.json()["items"][0]["id"] == batch[-1]["id"]
    before = env.count_tasks(user.id)
    other = {**ITEMS[-1], "input": {"n": 2}}
    assert_error(
        env.client.post("/api/tasks/batch", json={"tasks": [ITEMS[0], other]}, headers=user.headers),
        422,
        "idempotency_key_reused",
    )
    assert env.count_tasks(user.id) == before
